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
from pipeline.tracking.stats import mean_interval
from pipeline.tracking.store import experiment_id, open_store
from pipeline.tracking.summary import (
    current_attempts,
    is_seed_param,
    is_setting,
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


def test_best_group_is_the_best_mean_and_ties_go_to_the_tie_metric_then_the_first_job(
        ) -> None:
    groups = pd.DataFrame({"lr": ["a", "b", "c", "d"],
                           "val_accuracy_mean": [0.9, 0.95, 0.95, 0.95],
                           "val_log_loss_mean": [0.1, 0.30, 0.20, 0.20],
                           "first_job": [0.0, 1.0, 3.0, 2.0],
                           "first_run_id": ["r0", "r1", "r3", "r2"]})
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):  # whatever the store's order
        shuffled = groups.iloc[order]
        ranked = rank_groups(shuffled, "val_accuracy", "maximize", "val_log_loss")
        assert list(ranked["lr"]) == ["d", "c", "b", "a"]
        assert list(rank_groups(shuffled, "val_accuracy", "minimize", "val_log_loss")["lr"]
                    ) == ["a", "d", "c", "b"]
        # No tie metric: the first job decides.
        assert list(rank_groups(shuffled, "val_accuracy", "maximize")["lr"]) == [
            "b", "d", "c", "a"]
    groups.loc[0, "val_accuracy_mean"] = np.nan  # no finished run: not ranked
    assert "a" not in list(rank_groups(groups, "val_accuracy", "minimize")["lr"])


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
    assert metrics["best_config_test_accuracy_mean"] == pytest.approx(0.905)
    assert metrics["best_run_test_accuracy"] == 0.91  # the best run of that configuration
    assert metrics["best_config_n"] == 2
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


# -- intervals that stay in range, paired comparisons ---------------------------------------
def test_intervals_never_leave_the_metrics_range() -> None:
    """Accuracies near 1 over 3 seeds: the plain t interval reaches past 1 (the issue's
    1.0077); the reported one stops at 1. Losses near 0 stop at 0."""
    from pipeline.tracking.stats import metric_range

    accuracy = mean_interval(np.array([1.0, 0.98, 1.0]), metric_range("val_accuracy"))
    plain = mean_interval(np.array([1.0, 0.98, 1.0]))
    assert plain["ci95_high"] > 1.0  # what a plain t interval says
    assert accuracy["ci95_high"] == 1.0 and accuracy["ci95_low"] == plain["ci95_low"]
    loss = mean_interval(np.array([0.001, 0.02, 0.003]), metric_range("test_log_loss"))
    assert loss["ci95_low"] == 0.0
    for name in ("val_accuracy", "test_f1", "test_roc_auc", "val_precision_recall_auc",
                 "fold3_val_f1_macro", "test_mse"):
        assert metric_range(name) == (0.0, 1.0), name
    assert metric_range("test_brier_score") == (0.0, 2.0)  # beyond two classes: up to 2
    for name in ("test_log_loss", "val_accuracy_std", "train_loss", "time_train_s"):
        assert metric_range(name) == (0.0, math.inf), name


def test_identical_results_seed_by_seed_give_zero_p_one_and_no_warning() -> None:
    import warnings

    from pipeline.tracking.stats import describe_seeds, paired_difference

    values = np.array([0.9, 0.85, 0.95, 0.9, 0.875])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning from a 0/0 would fail here
        paired = paired_difference(values, values.copy(), (0.0, 1.0))
    assert (paired.n, paired.mean, paired.ci95_low, paired.ci95_high) == (5, 0.0, 0.0, 0.0)
    assert (paired.t_p, paired.wilcoxon_p, paired.seeds_needed) == (1.0, 1.0, None)
    assert describe_seeds(paired) == "n/a (no difference)"


def test_paired_statistics_are_scipys_and_holm_corrects_them() -> None:
    from pipeline.tracking.stats import holm, paired_difference

    rng = np.random.default_rng(3)
    best = rng.uniform(0.8, 1.0, 6)
    other = best - rng.normal(0.02, 0.02, 6)
    paired = paired_difference(best, other, (0.0, 1.0))
    diff = best - other
    half = stats.t.ppf(0.975, 5) * diff.std(ddof=1) / math.sqrt(6)
    assert paired.mean == pytest.approx(diff.mean())
    assert (paired.ci95_low, paired.ci95_high) == pytest.approx((diff.mean() - half,
                                                                 diff.mean() + half))
    assert paired.t_p == pytest.approx(stats.ttest_rel(best, other).pvalue, rel=1e-9)
    assert paired.wilcoxon_p == pytest.approx(stats.wilcoxon(diff).pvalue, rel=1e-9)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, math.nan, 0.01]) == pytest.approx([0.5, math.nan, 0.02], nan_ok=True)


def test_seeds_for_80_percent_power_match_the_paired_t_tables() -> None:
    """Cohen's d 0.5, 0.8, 1.0 at alpha 0.05 two-sided: 34, 15, 10 pairs (G*Power)."""
    from pipeline.tracking.stats import seeds_for_power

    assert [seeds_for_power(d, 1.0) for d in (0.5, 0.8, 1.0)] == [34, 15, 10]
    assert seeds_for_power(-0.05, 0.1) == 34  # the sign does not matter
    assert seeds_for_power(0.0, 0.1) is None and seeds_for_power(0.02, 0.0) == 2
    assert seeds_for_power(15.0, 1.0) == 2  # far in the noncentral t's tail (SciPy: NaN)


# -- one deterministic ranking ----------------------------------------------------------------
def _runs(rows: list[tuple[str, float, float, str]]) -> pd.DataFrame:
    """(run id, val_accuracy, val_log_loss, job folder) rows of finished children."""
    return pd.DataFrame([{
        "run_id": run_id, "run_name": run_id, "status": "FINISHED", "start_time": i,
        "config_digest": run_id, "blank": False, "output_dir": f"/sweep/{job}",
        "job": float(job) if job.isdigit() else math.nan, "param:optimizer.lr": str(i),
        "metric:val_accuracy": acc, "metric:val_log_loss": loss,
    } for i, (run_id, acc, loss, job) in enumerate(rows)])


def test_runs_tied_on_the_metric_go_to_the_tie_metric_then_the_job_then_the_run_id() -> None:
    from pipeline.tracking.summary import rank_runs

    table = _runs([("e", 1.0, 0.30, "0"), ("d", 1.0, 0.10, "3"), ("c", 1.0, 0.10, "1"),
                   ("b", 0.9, 0.01, "2"), ("a", 1.0, 0.30, "x"), ("f", 1.0, math.nan, "4")])
    for seed in range(5):  # whatever order the store returns the runs in
        shuffled = table.sample(frac=1, random_state=seed)
        ranked = rank_runs(shuffled, "val_accuracy", "maximize", "val_log_loss")
        assert list(ranked["run_id"]) == ["c", "d", "e", "a", "f", "b"]
        assert list(rank_runs(shuffled, "val_accuracy", "maximize")["run_id"]) == [
            "e", "c", "d", "f", "a", "b"]


def test_a_key_the_sweep_varies_tells_configurations_apart_even_if_bookkeeping() -> None:
    """train.checkpoint_every=100,150 changes no result (same config digest): swept, it is
    two configurations, every run counts (none is an attempt of another) and they compare
    seed by seed; a resumed sweep's second attempt at one job still supersedes the first."""
    from pipeline.tracking.summary import decide

    rows = []
    for every in ("100", "150"):
        for seed in range(5):
            rows.append({"run_id": f"r{every}-{seed}", "run_name": "x", "status": "FINISHED",
                         "start_time": len(rows), "config_digest": f"d{seed}", "blank": False,
                         "output_dir": f"/s/{len(rows)}", "job": float(len(rows)),
                         "param:train.checkpoint_every": every, "param:seed": str(seed),
                         "param:seeds.init": str(100 + seed),
                         "metric:val_accuracy": 0.8 + seed / 100, "metric:val_log_loss": 0.3})
    table = pd.DataFrame(rows)
    chosen = decide(table, "val_accuracy", "maximize", "val_log_loss",
                    ["train.checkpoint_every", "seed"])
    assert len(chosen.children) == 10
    assert chosen.settings == ["param:train.checkpoint_every"]
    assert list(chosen.ranked_groups["train.checkpoint_every"]) == ["100", "150"]
    (row,) = chosen.comparisons.to_dict("records")
    assert (row["n_pairs"], row["diff_mean"], row["t_p"]) == (5, 0.0, 1.0)
    assert not row["distinguishable"]
    # Not swept (a resumed sweep's attempts at the same jobs): one run per digest counts.
    assert len(decide(table, "val_accuracy", "maximize", "val_log_loss", ["seed"]).children) == 5


def test_the_parent_params_are_the_sweeps_overrides_and_search_space() -> None:
    import json

    from pipeline.tracking.summary import SEARCH_SPACE_TAG, sweep_params, swept_keys

    tags = {"sweep_overrides": json.dumps(["optimizer.lr=0.01,0.1", "train.epochs=20",
                                           "+tags.owner=me", "seed=range(1,4)",
                                           "hydra.sweep.dir=x"]),
            SEARCH_SPACE_TAG: json.dumps({"model.hidden_sizes": "choice([8], [16])"})}
    assert swept_keys(tags) == ["optimizer.lr", "seed", "model.hidden_sizes"]
    params = sweep_params(tags, {"sweep.metric": "val_accuracy"})
    assert params == {"optimizer.lr": "0.01,0.1", "train.epochs": "20", "tags.owner": "me",
                      "seed": "range(1,4)", "model.hidden_sizes": "choice([8], [16])",
                      "swept": "optimizer.lr, seed, model.hidden_sizes",
                      "sweep.metric": "val_accuracy"}
    assert sweep_params({"sweep_overrides": "not json"}) == {}  # stored data: checked


def test_the_parent_describes_its_sweep_once(tmp_path: Path) -> None:
    """A real store: params from the sweep's overrides, the counts once (tags), the best
    run's figures as best_run_* (its stage times too, named so), no best_time_*, and a
    resumed sweep's different value of a param does not fail the summary."""
    import json

    store = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = store.client
    exp = experiment_id(store, "describe")
    overrides = json.dumps(["optimizer.lr=0.01,0.1", "train.epochs=20"])
    parent = client.create_run(exp, tags={"sweep": "parent", "sweep_overrides": overrides,
                                          "sweep_tie_metric": "val_log_loss"}).info.run_id
    client.log_param(parent, "train.epochs", "10")  # logged before (a resumed sweep)
    for job, (lr, acc, loss) in enumerate([("0.01", 0.95, 0.2), ("0.1", 0.95, 0.1)]):
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent,
                                           "config_digest": lr,
                                           "output_dir": f"/sweep/{job}"}).info.run_id
        client.log_param(run, "optimizer.lr", lr)
        for name, value in {"val_accuracy": acc, "val_log_loss": loss, "test_accuracy": 0.9,
                            "time_train_s": 1.5}.items():
            client.log_metric(run, name, value)
        client.set_terminated(run, "FINISHED")
    summary = summarise(store, exp, parent, "val_accuracy", "maximize", plots=False)
    run = client.get_run(parent)
    assert run.data.tags["best.optimizer.lr"] == "0.1"  # the tie: the lower val_log_loss
    assert summary.best_run_id == run.data.tags["best_run_id"]
    assert run.data.params["optimizer.lr"] == "0.01,0.1"
    assert run.data.params["train.epochs"] == "10"  # kept: a param does not change
    assert run.data.params["sweep.tie_metric"] == "val_log_loss"
    metrics = run.data.metrics
    assert metrics["best_run_test_accuracy"] == 0.9 and metrics["best_run_val_log_loss"] == 0.1
    assert metrics["best_run_time_train_s"] == 1.5
    assert not [k for k in metrics if k.startswith(("best_time_", "n_children", "n_failed"))]
    assert (run.data.tags["n_children"], run.data.tags["n_failed"]) == ("2", "0")
    assert summary.final_estimate == ("Final estimate (test split, not used for selection): "
                                      f"test_accuracy 0.9000 (run {summary_best_name(run)})")
    mlflow.set_tracking_uri(None)


def summary_best_name(parent: object) -> str:
    return parent.data.tags["best_run_name"]  # type: ignore[attr-defined]


# -- the checks at a sweep's start -------------------------------------------------------------
def _sweep_config(task: list[str], val_fraction: float = 0.2, folds: int | None = None,
                  params: dict[str, str] | None = None) -> object:
    return OmegaConf.create({"split": {"val_fraction": val_fraction, "folds": folds},
                             "hydra": {"overrides": {"task": task},
                                       "sweeper": {"params": params}}})


def _sweep(metric: str) -> object:
    from pipeline.config.schema import SweepConfig

    return SweepConfig(metric=metric, direction="maximize", replicates=None, resume=None,
                       max_failures=None, child_record="lean", tie_metric="val_log_loss")


def test_a_validation_metric_without_validation_data_stops_the_sweep_in_one_line() -> None:
    from pipeline.sweeps.selection import check_selection

    assert check_selection(_sweep_config(["optimizer.lr=0.1,0.2"]), _sweep("val_accuracy")) is None
    assert check_selection(_sweep_config([], 0.0, 5), _sweep("val_f1")) is None  # folds
    for config, space in ((_sweep_config(["optimizer.lr=0.1,0.2"], 0.0), None),
                          (_sweep_config(["split.val_fraction=0.2,0"]), None),
                          (_sweep_config([], 0.2), {"split.val_fraction": "choice(0.2, 0)"})):
        with pytest.raises(PipelineError) as error:
            check_selection(config, _sweep("val_accuracy"), space)
        line = str(error.value)
        assert "\n" not in line and "sweep.metric=val_accuracy" in line
        assert "split.val_fraction=0.2" in line and "split.folds=5" in line
        assert "sweep.metric=test_accuracy" in line
    with pytest.raises(PipelineError) as swept:
        check_selection(_sweep_config(["split.val_fraction=0.2,0"]), _sweep("val_accuracy"))
    assert "the jobs with split.val_fraction=0 have no validation data" in str(swept.value)
    # An interval never draws its end point.
    assert check_selection(_sweep_config([]), _sweep("val_accuracy"),
                           {"split.val_fraction": "interval(0, 0.3)"}) is None


def test_a_test_metric_runs_with_one_line_about_the_bias() -> None:
    from pipeline.sweeps.selection import check_selection

    line = check_selection(_sweep_config([], 0.0), _sweep("test_accuracy"))
    assert line is not None and "\n" not in line
    assert "biased" in line and "val_accuracy" in line


def test_optunas_storage_ranks_on_an_sql_storage_too(tmp_path: Path) -> None:
    """The study's storage becomes a ranked one of its own class (in memory, or SQL behind
    Optuna's cache) and still works as a storage; outside a sweep Optuna's choice stands."""
    import optuna

    from pipeline.sweeps.tuning import _rank_best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for configured in (None, f"sqlite:///{tmp_path / 'optuna.db'}"):
        storage = optuna.storages.get_storage(configured)
        kind = type(storage)
        _rank_best(storage, configured)
        assert isinstance(storage, kind) and repr(storage) == repr(configured)
        study = optuna.create_study(storage=storage, direction="maximize")
        for value in (0.5, 0.9, 0.9):
            study.tell(study.ask(), value)
        assert storage._asked == [t._trial_id for t in study.trials]
        assert study.best_trial.number == 1 and study.best_value == 0.9
