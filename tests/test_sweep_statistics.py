"""A sweep's summary: seed groups, their statistics and ranking, attempts of a resumed sweep,
and the override planning of replicates and resumes. Fast: no pipeline run."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from pipeline.errors import PipelineError
from pipeline.sweeps.callback import _defining, _resumed_overrides, _with_replicates
from pipeline.tracking.parent import PastSweep
from pipeline.tracking.store import experiment_id, open_store
from pipeline.tracking.summary import (
    current_attempts,
    is_seed_param,
    is_setting,
    mean_interval,
    rank_groups,
    seed_groups,
    summarise,
)

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def test_mean_interval_is_the_student_t_interval_of_the_mean() -> None:
    values = np.array([0.90, 0.95, 0.97, 0.93])
    got = mean_interval(values)
    half = stats.t.ppf(0.975, 3) * values.std(ddof=1) / math.sqrt(4)
    assert got["mean"] == pytest.approx(values.mean())
    assert got["std"] == pytest.approx(values.std(ddof=1))
    assert got["ci95_low"] == pytest.approx(values.mean() - half)
    assert got["ci95_high"] == pytest.approx(values.mean() + half)
    assert (got["min"], got["max"]) == (0.90, 0.97)


def test_mean_interval_of_one_run_has_no_spread_and_of_none_no_mean() -> None:
    one = mean_interval(np.array([0.5]))
    assert one["mean"] == 0.5 and math.isnan(one["std"]) and math.isnan(one["ci95_low"])
    assert all(math.isnan(v) for v in mean_interval(np.array([])).values())


def test_seeds_and_bookkeeping_never_define_a_configuration() -> None:
    for name in ("seed", "data.seed", "split.seed", "model.seed", "train.shuffle_seed",
                 "seeds.init"):
        assert is_seed_param(name) and not is_setting(name)
    for name in ("sweep.resume", "train.progress", "train.threads", "pipeline.cache"):
        assert not is_setting(name)
    assert is_setting("optimizer.lr") and is_setting("model.hidden_sizes")


def _children(rows: list[tuple[str, str, str, float | None]]) -> pd.DataFrame:
    """(lr, seed, status, test_accuracy) rows as summary.children_table makes them."""
    return pd.DataFrame([{
        "run_id": f"run{i}", "run_name": f"r{i}", "status": status, "start_time": i,
        "config_digest": f"{lr}-{seed}", "blank": False, "param:optimizer.lr": lr,
        "param:seed": seed, "metric:test_accuracy": acc if acc is not None else np.nan,
    } for i, (lr, seed, status, acc) in enumerate(rows)])


def test_groups_summarise_finished_runs_and_name_the_ones_that_did_not_finish() -> None:
    children = _children([("0.1", "1", "FINISHED", 0.90), ("0.1", "2", "FINISHED", 0.80),
                          ("0.1", "3", "FAILED", None), ("0.01", "1", "FINISHED", 0.70),
                          ("0.01", "2", "FINISHED", 0.72), ("0.01", "3", "FINISHED", 0.74)])
    groups = seed_groups(children, ["param:optimizer.lr"], ["test_accuracy"]).set_index(
        "optimizer.lr")
    assert groups.loc["0.1", "n"] == 2 and groups.loc["0.1", "n_runs"] == 3
    assert groups.loc["0.1", "n_failed"] == 1
    assert "1 of 3 runs did not finish: statistics over 2" in groups.loc["0.1", "note"]
    assert groups.loc["0.1", "test_accuracy_mean"] == pytest.approx(0.85)
    assert groups.loc["0.01", "note"] == ""
    assert groups.loc["0.01", "test_accuracy_std"] == pytest.approx(0.02)
    assert set(groups.loc["0.01", "run_ids"].split()) == {"run3", "run4", "run5"}


def test_best_group_is_the_best_mean_and_ties_go_to_the_smaller_spread() -> None:
    groups = pd.DataFrame({"lr": ["a", "b", "c"], "acc_mean": [0.9, 0.95, 0.95],
                           "acc_std": [0.01, 0.05, 0.02]})
    assert list(rank_groups(groups, "acc", "maximize")["lr"]) == ["c", "b", "a"]
    assert list(rank_groups(groups, "acc", "minimize")["lr"]) == ["a", "c", "b"]
    groups.loc[0, "acc_mean"] = np.nan  # a configuration with no finished run is not ranked
    assert list(rank_groups(groups, "acc", "minimize")["lr"]) == ["c", "b"]


def test_a_configurations_finished_attempt_counts_over_newer_failed_ones() -> None:
    table = pd.DataFrame({
        "run_id": ["old-done", "new-killed", "a1", "a2", "blank"],
        "status": ["FINISHED", "KILLED", "FINISHED", "FINISHED", "KILLED"],
        "start_time": [1, 2, 3, 4, 5],
        "config_digest": ["x", "x", "y", "y", "blank"],
        "blank": [False, False, False, False, True],
    })
    kept = table.loc[current_attempts(table), "run_id"]
    assert list(kept) == ["old-done", "a2"]


def _config(**extra: object) -> object:
    return OmegaConf.create({"seed": 5, "hydra": {"sweeper": {"_target_": BASIC}}, **extra})


def test_replicates_sweep_the_root_seed_from_the_configured_one() -> None:
    got = _with_replicates(_config(), ["optimizer.lr=0.1,0.2", "seed=5"], 3)
    assert got == ["optimizer.lr=0.1,0.2", "seed=range(5,8)"]


@pytest.mark.parametrize(("overrides", "sweeper", "message"), [
    (["seed=1,2"], BASIC, "already swept"),
    (["optimizer.lr=0.1"], "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
     "basic sweeper"),
])
def test_replicates_refuse_what_they_cannot_add_seeds_to(overrides: list[str], sweeper: str,
                                                         message: str) -> None:
    config = OmegaConf.create({"seed": 0, "hydra": {"sweeper": {"_target_": sweeper}}})
    with pytest.raises(PipelineError, match=message):
        _with_replicates(config, overrides, 2)


def _past(overrides: list[str] | None) -> PastSweep:
    return PastSweep("parent-id", "1", "mlp-pipeline", "KILLED", overrides, BASIC, 2)


def test_a_resume_without_overrides_takes_the_past_sweeps_own() -> None:
    config = _config(sweep={"metric": "test_accuracy"})
    past = _past(["seed=1,2,3", "optimizer.lr=0.1,0.2", "tracking.uri=sqlite:///old.db",
                  "sweep.metric=test_f1", "sweep.resume=last"])
    got = _resumed_overrides(config, ["tracking.uri=sqlite:///new.db", "sweep.resume=last"],
                             past)
    assert _defining(got) == ["optimizer.lr=0.1,0.2", "seed=1,2,3"]
    assert "tracking.uri=sqlite:///new.db" in got and "tracking.uri=sqlite:///old.db" not in got
    assert got.count("sweep.resume=last") == 1
    assert config.sweep.metric == "test_f1"  # the parent reports on the past sweep's metric


def test_a_resume_with_other_overrides_is_refused_with_the_command_to_use() -> None:
    past = _past(["seed=1,2,3", "optimizer.lr=0.1,0.2"])
    same = ["optimizer.lr=0.1,0.2", "seed=1,2,3", "train.progress=false", "sweep.resume=last"]
    assert _resumed_overrides(_config(), same, past) == same
    with pytest.raises(PipelineError, match=r"other jobs.*seed=1,2,3 optimizer.lr=0.1,0.2"):
        _resumed_overrides(_config(), ["seed=1,2", "sweep.resume=last"], past)


def test_summary_on_a_real_store_ranks_by_group_mean_and_flags_a_failed_seed(
        tmp_path: Path) -> None:
    """Two configurations x three seeds: the luckiest single run is in the worse group."""
    store = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = store.client
    exp = experiment_id(store, "stats")
    parent = client.create_run(exp, tags={"sweep": "parent"}).info.run_id
    results = {"0.1": [0.99, 0.70, 0.71], "0.01": [0.90, 0.91, None]}
    for lr, accuracies in results.items():
        for seed, acc in enumerate(accuracies):
            run = client.create_run(exp, tags={"mlflow.parentRunId": parent,
                                               "config_digest": f"{lr}/{seed}"}).info.run_id
            client.log_param(run, "optimizer.lr", lr)
            client.log_param(run, "seed", str(seed))
            if acc is not None:
                client.log_metric(run, "test_accuracy", acc)
            client.set_terminated(run, "FINISHED" if acc is not None else "FAILED")
    summary = summarise(store, exp, parent, "test_accuracy", "maximize", plots=False)
    tags = client.get_run(parent).data.tags
    metrics = client.get_run(parent).data.metrics
    assert tags["best.optimizer.lr"] == "0.01"  # mean 0.905 beats 0.80, whose best run is 0.99
    assert tags["best_by"] == "mean over 2 seeds (1 of 3 did not finish)"
    assert metrics["best_test_accuracy"] == pytest.approx(0.905)
    assert metrics["best_n"] == 2
    assert summary.counts.children == 6 and summary.counts.failed == 1
    groups = pd.read_csv(client.download_artifacts(parent, "summary/groups.csv",
                                                   str(tmp_path)))
    assert list(groups["optimizer.lr"]) == [0.01, 0.1]
    assert list(groups["n"]) == [2, 3]
    assert "did not finish" in groups["note"].iloc[0]
    assert list(summary.leaderboard["optimizer.lr"]) == ["0.01", "0.1"]
    mlflow.set_tracking_uri(None)


def test_links_open_the_training_views_on_the_servers_own_address() -> None:
    """MLflow 3.17's UI opens a fresh browser on its GenAI pages unless the link asks for
    the training view (checked in headless Chromium on the run, runs-table and compare
    routes)."""
    import json
    from urllib.parse import parse_qs, urlsplit

    from pipeline.tracking.runs import compare_url, experiment_url, run_url

    local = run_url("sqlite:////x/mlflow.db", "3", "abc")
    assert local == ("http://127.0.0.1:5000/#/experiments/3/runs/abc"
                     "?workflowType=machine_learning")
    served = run_url("http://10.0.0.5:5001/", "3", "abc")
    assert served.startswith("http://10.0.0.5:5001/#/experiments/3/runs/abc?")
    assert experiment_url("https://mlflow.example.org", "7").endswith(
        "/#/experiments/7/runs?workflowType=machine_learning")
    link = compare_url("http://127.0.0.1:5001", ["1", "1"], ["r1", "r2"])
    route, _, query = urlsplit(link).fragment.partition("?")
    assert route == "/compare-runs"
    fields = parse_qs(query)
    assert json.loads(fields["runs"][0]) == ["r1", "r2"]
    assert json.loads(fields["experiments"][0]) == ["1"]
    assert fields["workflowType"] == ["machine_learning"]


def test_a_resumed_job_waits_for_a_live_attempt_at_its_configuration(tmp_path: Path) -> None:
    """A worker of the dead sweep still finishing the same configuration is waited for and
    kept, so the resumed sweep never runs it twice."""
    import threading
    import time

    from pipeline.tracking.parent import finished_child

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = open_store(uri)
    client = store.client
    exp = experiment_id(store, "resume")
    parent = client.create_run(exp, tags={"sweep": "parent"}).info.run_id
    alive = {"mlflow.parentRunId": parent, "config_digest": "d1",
             "pipeline.heartbeat": str(int(time.time()))}  # no journal here: the heartbeat
    child = client.create_run(exp, tags=alive).info.run_id

    def finish_later() -> None:
        time.sleep(1.5)
        client.log_metric(child, "test_accuracy", 0.97)
        client.set_terminated(child, "FINISHED")

    worker = threading.Thread(target=finish_later)
    worker.start()
    started = time.monotonic()
    found = finished_child(uri, parent, "d1", wait_s=30)
    worker.join()
    assert found == (child, {"test_accuracy": 0.97})
    assert 1.0 < time.monotonic() - started < 10
    assert finished_child(uri, parent, "other", wait_s=30) is None  # nothing to wait for
    mlflow.set_tracking_uri(None)
