"""Sweeps that decide: seed statistics on the parent, sweep.replicates, resuming a sweep
killed with SIGKILL (basic and joblib launchers, Optuna without a storage) and
sweep.max_failures. End to end: ``python -m pipeline`` in subprocesses against a real
sqlite store in a temp folder, read back with MlflowClient."""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from pipeline.config.paths import PROJECT_ROOT
from tests.conftest import FAST

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
EXPERIMENT = "mlp-pipeline"
MARKER = "PIPELINE_SWEEP_DECISIONS_TEST"  # in the environment of every process we start
UI = "http://127.0.0.1:5000"
TRAINING_VIEW = "workflowType=machine_learning"
GRID = ["seed=1,2,3", "optimizer.lr=0.003,0.03"]
CONFIGS = {(seed, lr) for seed in (1, 2, 3) for lr in (0.003, 0.03)}


# -- helpers -----------------------------------------------------------------------------
def quick(*drop: str) -> list[str]:
    """FAST (conftest) without the keys in ``drop``, and no per-run plots or model."""
    return [o for o in FAST if o.split("=", 1)[0] not in drop] + [
        "tracking.plots=false", "tracking.log_model=false"]


def store_args(tmp: Path, sweep_dir: str = "sweep") -> list[str]:
    return [f"tracking.uri={uri_of(tmp)}", f"pipeline.cache_dir={tmp / 'cache'}",
            f"hydra.sweep.dir={tmp / sweep_dir}"]


def uri_of(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'mlflow.db'}"


def pipeline(*args: str, multirun: bool = True, timeout: int = 300,
             marker: str = "") -> subprocess.CompletedProcess:
    """``python -m pipeline [-m] args`` to the end; stdout and stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *(["-m"] if multirun else []), *args],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=timeout,
        env={**ENV, MARKER: marker or "1"})


def start(log: Path, *args: str, marker: str, multirun: bool = True) -> subprocess.Popen:
    """``python -m pipeline [-m] args`` in the background, stdout in ``log``."""
    with open(log, "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", *(["-m"] if multirun else []), *args],
            cwd=PROJECT_ROOT, env={**ENV, MARKER: marker}, stdout=out, stderr=err,
            start_new_session=True)


def client_of(tmp: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=uri_of(tmp))


def all_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], max_results=1000)


def parents(client: MlflowClient) -> list:
    return [r for r in all_runs(client) if r.data.tags.get("sweep") == "parent"]


def children(client: MlflowClient, parent_id: str) -> list:
    return [r for r in all_runs(client) if r.data.tags.get("mlflow.parentRunId") == parent_id]


def by_status(runs: list, status: str) -> list:
    return [r for r in runs if r.info.status == status]


def config_of(run) -> tuple[int, float]:
    return int(run.data.params["seed"]), float(run.data.params["optimizer.lr"])


def wait_for_parent(log: Path, process: subprocess.Popen, timeout: float = 120) -> str:
    """The sweep's parent run id, once the sweep printed it (the store exists then)."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(r"^Sweep parent MLflow run: ([0-9a-f]{32})$", log.read_text(), re.M)
        if found:
            return found.group(1)
        assert process.poll() is None, f"the sweep ended early: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no parent run announced"
        time.sleep(0.1)


def wait_until_finished(client: MlflowClient, parent_id: str, process: subprocess.Popen,
                        n: int, timeout: float = 120) -> None:
    """Until >= ``n`` children FINISHED and another one is RUNNING (the one a kill hits)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = children(client, parent_id)
        if len(by_status(runs, "FINISHED")) >= n and by_status(runs, "RUNNING"):
            return
        assert process.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline, f"{n} children did not finish in {timeout} s"
        time.sleep(0.1)


def marked_processes(marker: str, name: str = "") -> list[int]:
    """Live processes (not zombies) started with ``MARKER=marker`` whose command line holds
    ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if f"{MARKER}={marker}".encode() in environ and name in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def kill_marked(marker: str) -> None:
    for pid in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop(process: subprocess.Popen, marker: str) -> None:
    """SIGKILL whatever is left of a background sweep, its workers included."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    kill_marked(marker)


def kept_ids(stdout: str) -> list[str]:
    return re.findall(r"kept: this configuration finished before as run ([0-9a-f]{32})", stdout)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


# -- 1, 2: seed statistics --------------------------------------------------------------
@dataclass(frozen=True)
class Sweep:
    tmp: Path
    uri: str
    stdout: str
    parent_id: str
    experiment_id: str


SEEDED = ["optimizer.lr=0.0003,0.03", "sweep.replicates=5", "seed=1"]  # seeds 1..5, SGD
SEEDED_CONFIGS = {(seed, lr) for seed in range(1, 6) for lr in (0.0003, 0.03)}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """One sweep of 2 learning rates x 5 seeds (the issue's: far apart at 300 epochs)."""
    tmp = tmp_path_factory.mktemp("seeded")
    done = pipeline(*SEEDED, *quick("optimizer", "optimizer.lr"), *store_args(tmp))
    assert done.returncode == 0, done.stderr[-3000:]
    found = parents(client_of(tmp))
    assert len(found) == 1
    return Sweep(tmp, uri_of(tmp), done.stdout, found[0].info.run_id,
                 found[0].info.experiment_id)


def _truncated_t(values: np.ndarray, low: float = 0.0, high: float = 1.0) -> dict[str, float]:
    """The statistics the summary reports, computed here from scratch."""
    n = len(values)
    mean, std = values.mean(), values.std(ddof=1)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95_low": max(low, mean - half),
            "ci95_high": min(high, mean + half), "min": values.min(), "max": values.max()}


def _within_range(names_values: dict[str, float]) -> list[str]:
    """The entries whose value leaves its metric's range (see pipeline.tracking.stats)."""
    from pipeline.tracking.stats import metric_range

    out = []
    for name, value in names_values.items():
        low, high = metric_range(name)
        if not (math.isnan(value) or low - 1e-12 <= value <= high + 1e-12):
            out.append(f"{name}={value}")
    return out


def _rank_key(run) -> tuple:
    """The order the sweep ranks runs in: val_accuracy (higher first), val_log_loss (lower
    first), the job number."""
    return (-run.data.metrics["val_accuracy"], run.data.metrics.get("val_log_loss", math.inf),
            int(Path(run.data.tags["output_dir"]).name), run.info.run_id)


def test_seed_statistics_on_the_parent(seeded: Sweep) -> None:
    client = client_of(seeded.tmp)
    parent = client.get_run(seeded.parent_id)
    assert parent.info.status == "FINISHED"
    kids = children(client, seeded.parent_id)
    assert len(kids) == 10 and all(k.info.status == "FINISHED" for k in kids)
    assert {config_of(k) for k in kids} == SEEDED_CONFIGS

    path = client.download_artifacts(seeded.parent_id, "summary/groups.csv",
                                     str(seeded.tmp / "download"))
    groups = pd.read_csv(path)
    assert len(groups) == 2
    assert list(groups["n"]) == [5, 5]
    means = {}
    for lr in (0.0003, 0.03):
        members = [k for k in kids if config_of(k)[1] == lr]
        row = groups[np.isclose(groups["optimizer.lr"].astype(float), lr)]
        assert len(row) == 1
        row = row.iloc[0]
        assert set(str(row["run_ids"]).split()) == {k.info.run_id for k in members}
        for metric in ("val_accuracy", "test_accuracy"):
            values = np.array([k.data.metrics[metric] for k in members])
            for stat, value in _truncated_t(values).items():
                assert row[f"{metric}_{stat}"] == pytest.approx(value, rel=1e-9, abs=1e-12), (
                    metric, stat)
        scores = [k.data.metrics["val_accuracy"] for k in members]
        means[lr] = (np.mean(scores), members)
    # No interval leaves its metric's range ([0, 1] for scores, >= 0 for losses).
    bounds = {c: float(groups[c].iloc[i]) for c in groups.columns
              if c.endswith(("_ci95_low", "_ci95_high")) for i in range(len(groups))}
    assert not _within_range({k.rsplit("_ci95_", 1)[0]: v for k, v in bounds.items()})
    assert not _within_range({k.removeprefix("best_config_").rsplit("_ci95_", 1)[0]: v
                              for k, v in parent.data.metrics.items() if "_ci95_" in k})

    best_lr = max(means, key=lambda lr: means[lr][0])
    best_run = min(means[best_lr][1], key=_rank_key)
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["sweep"] == "parent"
    assert tags["best_by"] == "mean over 5 seeds"
    assert float(tags["best.optimizer.lr"]) == best_lr
    assert metrics["best_config_val_accuracy_mean"] == pytest.approx(means[best_lr][0],
                                                                     rel=1e-12)
    assert tags["best_run_id"] == best_run.info.run_id
    # The best run's figures under names that say so; the counts once, as tags.
    for name in ("val_accuracy", "test_accuracy", "test_log_loss"):
        assert metrics[f"best_run_{name}"] == best_run.data.metrics[name]
    assert not {"n_children", "n_failed"} & set(metrics)
    assert not [k for k in metrics if k.startswith("best_time_")]
    assert (tags["n_children"], tags["n_failed"]) == ("10", "0")
    # The parent's params: what the sweep varied and fixed, and what it selected on.
    params = parent.data.params
    assert params["optimizer.lr"] == "0.0003,0.03" and params["seed"] == "range(1,6)"
    assert params["sweep.metric"] == "val_accuracy"
    assert params["sweep.tie_metric"] == "val_log_loss"
    assert "optimizer.lr" in params["swept"]

    summary = {Path(a.path).name for a in client.list_artifacts(seeded.parent_id, "summary")}
    assert {"groups.csv", "groups.md", "groups.html", "comparisons.csv", "summary.md",
            "summary.html", "test_accuracy_vs_optimizer.lr.png",
            "val_accuracy_vs_optimizer.lr.png"} <= summary
    report = Path(client.download_artifacts(seeded.parent_id, "summary/summary.md",
                                            str(seeded.tmp / "download"))).read_text()
    assert "mean ± std" in report and "95% CI" in report and "truncated" in report
    assert "Final estimate (test split, not used for selection): test_accuracy" in report
    experiment = client.get_experiment(seeded.experiment_id)
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"


def test_learning_rates_far_apart_are_distinguishable_paired_by_seed(seeded: Sweep) -> None:
    """The same 5 seeds under both learning rates: the best against the runner-up seed by
    seed, with a paired t-test and a Wilcoxon test (one comparison: Holm changes nothing)."""
    client = client_of(seeded.tmp)
    parent = client.get_run(seeded.parent_id)
    kids = children(client, seeded.parent_id)
    by = {config_of(k): k.data.metrics["val_accuracy"] for k in kids}
    best_lr = float(parent.data.tags["best.optimizer.lr"])
    other_lr = ({0.0003, 0.03} - {best_lr}).pop()
    best = np.array([by[(seed, best_lr)] for seed in range(1, 6)])
    other = np.array([by[(seed, other_lr)] for seed in range(1, 6)])
    metrics = parent.data.metrics
    assert metrics["runner_up_diff_mean"] == pytest.approx((best - other).mean(), abs=1e-12)
    assert metrics["runner_up_t_p"] == pytest.approx(stats.ttest_rel(best, other).pvalue,
                                                     rel=1e-6)
    assert metrics["runner_up_wilcoxon_p"] == pytest.approx(
        stats.wilcoxon(best - other).pvalue, rel=1e-6)
    assert metrics["runner_up_t_p_holm"] == metrics["runner_up_t_p"]
    assert parent.data.tags["runner_up_distinguishable"] == "true"
    (line,) = [x for x in seeded.stdout.splitlines() if x.startswith("Best vs runner-up")]
    assert f"(optimizer.lr={other_lr})" in line and ": distinguishable;" in line
    assert "paired over 5 seeds" in line and "nan" not in line.lower()
    assert line == parent.data.tags["runner_up_comparison"]


@pytest.fixture(scope="module")
def no_difference(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """Two values of a key that changes no result, over 5 seeds."""
    tmp = tmp_path_factory.mktemp("nodiff")
    done = pipeline("train.checkpoint_every=100,150", "sweep.replicates=5", "train.epochs=20",
                    "data.n_samples=300", *quick("train.checkpoint_every", "train.epochs"),
                    *store_args(tmp))
    assert done.returncode == 0, done.stderr[-3000:]
    (parent,) = parents(client_of(tmp))
    return Sweep(tmp, uri_of(tmp), done.stdout + done.stderr, parent.info.run_id,
                 parent.info.experiment_id)


def test_a_key_that_changes_nothing_gives_a_difference_of_exactly_zero(
        no_difference: Sweep) -> None:
    """Swept by the user, train.checkpoint_every tells two configurations apart (none of the
    runs is an "earlier attempt" of another); their results are equal seed by seed: the
    difference is exactly 0, p = 1, not distinguishable, no seed count, no NaN, no warning."""
    out = no_difference.stdout
    (line,) = [x for x in out.splitlines() if x.startswith("Best vs runner-up")]
    assert "(train.checkpoint_every=150)" in line
    assert "difference +0.0000" in line and "[+0.0000, +0.0000]" in line
    assert "paired t p=1, Wilcoxon p=1" in line and ": not distinguishable;" in line
    assert line.endswith("seeds for 80% power: n/a (no difference)")
    assert "nan" not in line.lower()
    shown = "\n".join(x for x in out.splitlines() if not x.startswith("Warnings: "))
    assert "Warning" not in shown.replace("ConvergenceWarning", "")  # the statistics' own
    assert "superseded" not in out
    client = client_of(no_difference.tmp)
    parent = client.get_run(no_difference.parent_id)
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["n_children"] == "10" and "n_superseded" not in tags
    assert tags["best.train.checkpoint_every"] == "100"  # a tie: the first job's
    assert tags["runner_up_distinguishable"] == "false"
    assert metrics["runner_up_diff_mean"] == 0.0
    assert metrics["runner_up_diff_ci95_low"] == metrics["runner_up_diff_ci95_high"] == 0.0
    assert metrics["runner_up_t_p"] == metrics["runner_up_wilcoxon_p"] == 1.0
    assert "runner_up_seeds_for_80pct_power" not in metrics
    path = client.download_artifacts(no_difference.parent_id, "summary/comparisons.csv",
                                     str(no_difference.tmp / "download"))
    table = pd.read_csv(path)
    assert list(table["n_pairs"]) == [5] and not table["distinguishable"].any()


def test_optuna_reports_the_best_run_of_the_summary_on_a_tie(tmp_path: Path) -> None:
    """Trials that tie on val_accuracy (1.0 on the easy task): Optuna's printed best, its
    optimization_results.yaml, the parent's best_run_id and the leaderboard all name the
    run with the lowest val_log_loss, not the first trial to reach 1.0."""
    import yaml

    done = pipeline("hparams_search=mlp_optuna", "hydra.sweeper.n_trials=4", "train.epochs=300",
                    "data.n_samples=400", "train.progress=false", "tracking.plots=false",
                    "tracking.log_model=false", *store_args(tmp_path), multirun=False)
    assert done.returncode == 0, done.stderr[-3000:]
    client = client_of(tmp_path)
    (parent,) = parents(client)
    kids = children(client, parent.info.run_id)
    assert len(kids) == 4
    top = max(k.data.metrics["val_accuracy"] for k in kids)
    tied = sorted((k for k in kids if k.data.metrics["val_accuracy"] == top),
                  key=lambda k: int(Path(k.data.tags["output_dir"]).name))
    expected = min(kids, key=_rank_key)
    assert len(tied) > 1 and tied[0].info.run_id != expected.info.run_id, (
        "no tie that the tie metric decides: the test cannot tell the rankings apart")
    assert parent.data.tags["best_run_id"] == expected.info.run_id
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    printed = re.search(r"Best parameters: (\{.*\})", done.stdout + done.stderr)
    assert printed is not None
    for params in (results["best_params"], ast.literal_eval(printed.group(1))):
        assert float(params["optimizer.lr"]) == float(expected.data.params["optimizer.lr"])
        assert str(params["model.hidden_sizes"]).replace(" ", "") == (
            expected.data.params["model.hidden_sizes"].replace(" ", ""))
        assert str(params["train.batch_size"]) == expected.data.params["train.batch_size"]
    assert results["best_value"] == expected.data.metrics["val_accuracy"]
    board = _section(done.stdout, "Top 4 by val_accuracy")
    assert expected.info.run_name in board[2]


def test_leaderboard_and_links_are_printed(seeded: Sweep) -> None:
    out = seeded.stdout
    assert ("Top 2 by val_accuracy (mean over 5 seeds; ties: val_log_loss, then the job "
            "number):") in out
    assert "val_accuracy mean ± std" in out and "95% CI" in out
    assert re.search(r"^Final estimate \(test split, not used for selection\): test_accuracy "
                     r"\d\.\d{4} ± \d\.\d{4} \(mean ± std over 5 seeds\), 95% CI \[", out, re.M)
    parent_line = (f"Parent:  {UI}/#/experiments/{seeded.experiment_id}/runs/"
                   f"{seeded.parent_id}?{TRAINING_VIEW}")
    assert parent_line in out.splitlines()
    links = re.findall(r"^Compare: (\S+)", out, re.M)
    assert len(links) == 1
    link = links[0]
    assert link.startswith(f"{UI}/#/compare-runs?runs=") and link.endswith(f"&{TRAINING_VIEW}")
    query = parse_qs(link.split("#/compare-runs?", 1)[1])
    runs = json.loads(query["runs"][0])
    kids = {k.info.run_id for k in children(client_of(seeded.tmp), seeded.parent_id)}
    assert len(runs) == 10 and set(runs) == kids
    assert json.loads(query["experiments"][0]) == [seeded.experiment_id]


def _section(out: str, title: str) -> list[str]:
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(first + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[first:end]


def test_compare_two_seeds_of_one_configuration(seeded: Sweep) -> None:
    kids = children(client_of(seeded.tmp), seeded.parent_id)
    pair = sorted((k for k in kids if config_of(k)[1] == 0.0003), key=config_of)[:2]
    assert [config_of(k)[0] for k in pair] == [1, 2]
    ids = [k.info.run_id for k in pair]
    command = [sys.executable, "-m", "pipeline.commands.compare", *ids, "--uri", seeded.uri]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    params = _section(done.stdout, "params")
    assert re.match(r"params: \d+ differ, \d+ equal", params[0]), params[0]
    names = [line.split()[0] for line in params[3:]]  # below the title, header and rule
    assert "seed" in names and any(n.startswith("seeds.") for n in names)
    assert all(n == "seed" or n.startswith("seeds.") for n in names), names
    assert "optimizer.lr" not in "\n".join(params)

    output = seeded.tmp / "x.csv"
    done = subprocess.run([*command, "--format", "csv", "--output", str(output)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
                          env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(output, dtype={"name": str})
    rows = table[table["section"] == "params"]
    differ = set(rows[rows["status"] == "differs"]["name"])
    assert "seed" in differ and any(n.startswith("seeds.") for n in differ)
    assert all(n == "seed" or n.startswith("seeds.") for n in differ), differ
    assert "optimizer.lr" not in differ
    assert (rows["name"] == "seed").sum() == 1


# -- 3: replicates -----------------------------------------------------------------------
def test_replicates_run_every_configuration_with_n_seeds(tmp_path: Path) -> None:
    done = pipeline("optimizer.lr=0.003,0.03", "sweep.replicates=2", "seed=5",
                    *quick("optimizer.lr"), *store_args(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    client = client_of(tmp_path)
    (parent,) = parents(client)
    kids = children(client, parent.info.run_id)
    assert len(kids) == 4 and all(k.info.status == "FINISHED" for k in kids)
    assert sorted(config_of(k) for k in kids) == [(5, 0.003), (5, 0.03), (6, 0.003),
                                                  (6, 0.03)]
    assert parent.data.tags["best_by"] == "mean over 2 seeds"
    assert "Top 2 by val_accuracy (mean over 2 seeds" in done.stdout


def test_replicates_errors_are_one_line(tmp_path: Path) -> None:
    done = pipeline("seed=1,2", "sweep.replicates=2", *quick(), *store_args(tmp_path))
    assert done.returncode == 1
    assert "sweep.replicates" in one_line(done.stderr)
    assert not (tmp_path / "sweep" / "0").exists()

    done = pipeline("sweep.replicates=2", *quick(), f"tracking.uri={uri_of(tmp_path)}",
                    f"hydra.run.dir={tmp_path / 'run'}", multirun=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert any("add -m" in line and "sweep.replicates" in line
               for line in done.stderr.splitlines()), done.stderr[-3000:]


# -- 4, 5: resume after SIGKILL ----------------------------------------------------------
def _resume_scenario(tmp: Path, launcher: list[str]) -> None:
    """Kill a 6-job sweep with SIGKILL after two jobs finished, resume it twice."""
    client = client_of(tmp)
    marker = str(tmp)
    log = tmp / "first.out"
    # Jobs long enough (~1 s of training) that two are running when the launcher dies.
    process = start(log, *GRID, *quick("optimizer.lr", "train.epochs"), "train.epochs=20000",
                    *launcher, *store_args(tmp), marker=marker)
    joblib = bool(launcher)
    try:
        parent_id = wait_for_parent(log, process)
        wait_until_finished(client, parent_id, process, 2)
        os.kill(process.pid, signal.SIGKILL)  # the launcher only: workers stop by themselves
        process.wait(timeout=30)
        if joblib:
            # Each worker stops its job within ~1 s; ending the run (its last records, the
            # status) may take seconds more on a busy machine with two workers writing.
            deadline = time.monotonic() + 30
            while by_status(children(client, parent_id), "RUNNING"):
                assert time.monotonic() < deadline, "a job stayed RUNNING without its sweep"
                time.sleep(0.2)
            deadline = time.monotonic() + 30
            while marked_processes(marker, "loky"):
                assert time.monotonic() < deadline, (
                    f"loky workers outlived the sweep: {marked_processes(marker, 'loky')}")
                time.sleep(0.2)
        before = children(client, parent_id)
        assert client.get_run(parent_id).info.status == "RUNNING"  # nobody ended it
    finally:
        stop(process, marker)
    finished = {r.info.run_id: r.info.end_time for r in by_status(before, "FINISHED")}
    unfinished = {r.info.run_id for r in before} - set(finished)
    assert len(finished) >= 2 and len(finished) < 6
    assert unfinished, "no job was running when the sweep was killed"
    if not joblib:
        assert len(unfinished) == 1  # the one job the launcher was running

    resumed = pipeline("sweep.resume=last", *launcher, f"tracking.uri={uri_of(tmp)}",
                       f"hydra.sweep.dir={tmp / 'resumed'}", marker=marker)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (parent,) = parents(client)
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    kids = children(client, parent_id)
    done = by_status(kids, "FINISHED")
    assert {config_of(r) for r in done} == CONFIGS
    assert len(done) == 6
    assert len({r.data.tags["config_digest"] for r in done}) == 6
    now = {r.info.run_id: r for r in kids}
    for run_id, end_time in finished.items():  # kept, not run again
        assert now[run_id].info.status == "FINISHED"
        assert now[run_id].info.end_time == end_time
    for run_id in unfinished:  # killed with the sweep, not finished by anyone
        assert now[run_id].info.status == "KILLED", now[run_id].data.tags
    assert {r.info.status for r in kids} <= {"FINISHED", "KILLED"}
    assert sorted(kept_ids(resumed.stdout)) == sorted(finished)
    assert parent.data.tags["best_by"] == "mean over 3 seeds"

    again = pipeline("sweep.resume=last", *launcher, f"tracking.uri={uri_of(tmp)}",
                     f"hydra.sweep.dir={tmp / 'again'}", marker=marker)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(kept_ids(again.stdout)) == sorted(r.info.run_id for r in done)
    after = children(client, parent_id)
    assert {r.info.run_id for r in after} == set(now)  # no new child
    assert sorted(r.info.status for r in after) == sorted(r.info.status for r in kids)
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert not marked_processes(marker)


def test_resume_after_sigkill_with_the_basic_launcher(tmp_path: Path) -> None:
    _resume_scenario(tmp_path, [])


def test_resume_after_sigkill_with_the_joblib_launcher(tmp_path: Path) -> None:
    _resume_scenario(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])


# -- 6, 7: max_failures and error lines ---------------------------------------------------
def test_max_failures_stops_starting_jobs(tmp_path: Path) -> None:
    done = pipeline("optimizer.lr=1e9,2e9,0.01,3e9,0.02", "train.clip=none", "train.epochs=300",
                    "train.progress=false", "sweep.max_failures=2", "tracking.plots=false",
                    "tracking.log_model=false", *store_args(tmp_path))
    assert done.returncode == 1, done.stderr[-3000:]
    client = client_of(tmp_path)
    (parent,) = parents(client)
    kids = children(client, parent.info.run_id)
    assert sorted(k.info.status for k in kids) == ["FAILED", "FAILED"]
    assert {float(k.data.params["optimizer.lr"]) for k in kids} == {1e9, 2e9}
    assert parent.info.status == "FAILED"
    assert "sweep.max_failures=2 reached: 3 job(s) not started" in parent.data.tags["error"]
    assert len(list((tmp_path / "sweep").rglob("not_started.txt"))) == 3
    assert "3 not started (sweep.max_failures)" in done.stdout


@pytest.mark.parametrize("sweep", [
    ["experiment=rustnet_csv", "optimizer.lr=0.1,0.2"],  # the preset: no validation rows
    ["experiment=rustnet_rf,rustnet_csv"],  # a swept group, composed per option
    ["split.val_fraction=0.2,0", "optimizer.lr=0.1"],  # a swept value
])
def test_selecting_on_validation_without_validation_data_fails_before_any_job(
        tmp_path: Path, sweep: list[str]) -> None:
    done = pipeline(*sweep, *quick("optimizer.lr"), *store_args(tmp_path))
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith("sweep.metric=val_accuracy: ") and "no validation data" in line
    assert "split.val_fraction=0.2 or split.folds=5" in line
    assert "sweep.metric=test_accuracy" in line
    assert all_runs(client_of(tmp_path)) == []  # no parent run either
    assert not (tmp_path / "sweep" / "0").exists()


def test_resume_of_an_unknown_run_is_one_line(tmp_path: Path) -> None:
    unknown = "0123456789abcdef0123456789abcdef"
    done = pipeline(f"sweep.resume={unknown}", *quick(), *store_args(tmp_path))
    assert done.returncode == 1
    assert unknown in one_line(done.stderr)
    assert all_runs(client_of(tmp_path)) == []
    assert not (tmp_path / "sweep" / "0").exists()


# -- 8: Optuna without a storage replays its study -----------------------------------------
def test_optuna_resume_without_storage_replays(tmp_path: Path) -> None:
    client = client_of(tmp_path)
    marker = str(tmp_path)
    command = ["hparams_search=mlp_optuna", "hydra.sweeper.n_trials=5", "train.progress=false",
               "train.epochs=1000", "train.checkpoint_every=0", "tracking.plots=false",
               "tracking.log_model=false", f"tracking.uri={uri_of(tmp_path)}",
               f"pipeline.cache_dir={tmp_path / 'cache'}"]
    log = tmp_path / "first.out"
    process = start(log, *command, f"hydra.sweep.dir={tmp_path / 'sweep'}", marker=marker,
                    multirun=False)
    try:
        parent_id = wait_for_parent(log, process)
        wait_until_finished(client, parent_id, process, 2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        stop(process, marker)
    before = children(client, parent_id)
    finished = {r.info.run_id: r.info.end_time for r in by_status(before, "FINISHED")}
    assert 2 <= len(finished) < 5

    resumed = pipeline(*command, "sweep.resume=last", f"hydra.sweep.dir={tmp_path / 'resumed'}",
                       multirun=False, marker=marker)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (parent,) = parents(client)
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    kids = children(client, parent_id)
    done = by_status(kids, "FINISHED")
    assert len(done) == 5
    assert len({r.data.tags["config_digest"] for r in done}) == 5
    assert Counter(r.info.status for r in kids) - Counter(FINISHED=5) == Counter(
        KILLED=len(before) - len(finished))
    now = {r.info.run_id: r for r in kids}
    for run_id, end_time in finished.items():
        assert now[run_id].info.status == "FINISHED" and now[run_id].info.end_time == end_time
    assert sorted(kept_ids(resumed.stdout)) == sorted(finished)
    assert not marked_processes(marker)


# -- a reused sweep folder, a configuration whose every run failed ---------------------------
def test_a_sweep_dir_reused_does_not_count_old_not_started_jobs(tmp_path: Path) -> None:
    first = pipeline("optimizer.lr=1e9,0.01", "train.clip=none", "sweep.max_failures=1",
                     *quick("optimizer", "optimizer.lr"), *store_args(tmp_path))  # SGD diverges
    assert first.returncode == 1, first.stderr[-2000:]
    assert len(list((tmp_path / "sweep").rglob("not_started.txt"))) == 1
    second = pipeline("seed=1,2", *quick(), *store_args(tmp_path))
    assert "not started" not in second.stdout
    assert second.returncode == 0, second.stdout[-2000:]


def test_a_seed_sweep_whose_jobs_all_fail_is_still_summarised(tmp_path: Path) -> None:
    # Every job diverges while it trains (an error every job makes before its run, a CSV
    # that is not there, ends the sweep before any run: tests/test_sweep_output.py).
    done = pipeline("seed=1,2", "optimizer.lr=1e9", "train.clip=none",
                    *quick("optimizer", "optimizer.lr"), *store_args(tmp_path))
    assert done.returncode == 1
    (parent,) = parents(client_of(tmp_path))
    assert parent.info.status == "FAILED"
    assert "summary failed" not in done.stdout + done.stderr
    assert parent.data.tags["error"] == "2 job(s) failed"
