"""The summary a sweep's parent run holds: tables, seed statistics, the chosen configuration,
its final estimate, paired comparisons, comparison plots, and the leaderboard the sweep
prints.

Read back from MLflow (the children are the runs tagged ``mlflow.parentRunId``), so
it works the same whichever launcher ran the jobs and wherever they ran.

**Selection.** Runs are ranked by ``sweep.metric`` (a validation metric by default), ties
broken by ``sweep.tie_metric`` in its own direction (lower is better for losses), then by
the job number, then by the run id: one order, whatever order the store returns runs in
(:func:`rank_runs`). The chosen run's (or configuration's) test figures are the final
estimate: the test split chose nothing.

**Configurations.** Children that differ only in their seeds form a *group* (one
configuration). A configuration is told from another by its settings (what the config
digest covers) and by any other key the sweep itself varies (``train.threads=1,2``: the
user asked to compare those values). With more than one run per group, the best
configuration is the best group mean (same tie-breaks, on the groups' means, then the
group's first job), not the luckiest seed; its statistics and the paired comparisons are
in :mod:`pipeline.tracking.stats`. A resumed sweep can hold several attempts at one
configuration: the finished one counts, the others are listed as superseded.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.digest import is_bookkeeping
from pipeline.config.schema import lower_is_better
from pipeline.tracking.record import (
    CONFIG_DIGEST_TAG,
    ENDED_BY_RESUME_TAG,
    SWEEP_OVERRIDES_TAG,
    WARNINGS_TAG,
)
from pipeline.tracking.stats import (
    INTERVAL_METHOD,
    PAIRED_METHOD,
    STATS,
    Paired,
    describe_seeds,
    format_p,
    holm,
    mean_interval,
    metric_range,
    paired_difference,
)
from pipeline.tracking.store import Store

CURVE_METRIC = "train_loss"
CURVES_AT_MOST = 10  # training curves drawn: the best children's (one read each)
# The params that choose random streams; every other swept param is a setting.
SEED_PARAMS = frozenset({"seed", "data.seed", "split.seed", "model.seed", "train.shuffle_seed"})
LEADERBOARD_SIZE = 5
# The parent's tags that describe its sweep (besides record.SWEEP_OVERRIDES_TAG).
TIE_METRIC_TAG = "sweep_tie_metric"
SEARCH_SPACE_TAG = "sweep_search_space"  # Optuna's hydra.sweeper.params, as a JSON object
SWEPT_PARAM = "swept"  # the parent's param listing the keys its sweep varies
PARAMS_PER_CALL = 100  # what one log_batch takes (params and tags together)
PARAM_VALUE_LENGTH = 6000


@dataclass(frozen=True)
class Counts:
    """How the children of a sweep ended, one per configuration (its latest attempt)."""

    children: int
    failed: int  # FAILED, or still RUNNING when the sweep ended
    killed: int
    runs: int = 0  # every attempt, superseded ones included


@dataclass(frozen=True)
class Summary:
    """What :func:`summarise` wrote, and what the sweep prints at its end."""

    counts: Counts
    best_by: str  # "mean over 3 seeds", or "single run"
    leaderboard: pd.DataFrame  # the top configurations (or runs), best first
    ranked_run_ids: list[str] = field(default_factory=list)  # current children, best first
    best_run_id: str | None = None  # the best run (of the best configuration)
    final_estimate: str | None = None  # the chosen one's test figure, labelled
    comparison: str | None = None  # best vs runner-up, paired by seed (one line)
    warnings: str | None = None  # the warnings the runs showed, by kind (one line)
    ranked_by: str = ""  # "val_accuracy (ties: val_log_loss, then the job number)"


@dataclass(frozen=True)
class Selection:
    """What a sweep decided from its children (no store involved: see :func:`decide`)."""

    metric: str
    direction: str
    tie_metric: str | None
    children: pd.DataFrame  # the current attempts
    params: list[str]  # param columns that differ between children
    settings: list[str]  # those that tell configurations apart
    ranked_runs: pd.DataFrame  # FINISHED children with a value of the metric, best first
    groups: pd.DataFrame | None = None  # one row per configuration, ranked ones first
    ranked_groups: pd.DataFrame | None = None
    comparisons: pd.DataFrame | None = None  # best vs each other configuration
    best: pd.Series | None = None  # the best run
    best_by: str = "single run"

    @property
    def best_group(self) -> pd.Series | None:
        if self.ranked_groups is None or self.ranked_groups.empty:
            return None
        return self.ranked_groups.iloc[0]


def is_seed_param(name: str) -> bool:
    """A param that only picks random streams: the seeds set and the seeds derived."""
    return name in SEED_PARAMS or name.startswith("seeds.")


def children_table(store: Store, experiment_id: str, parent_id: str) -> pd.DataFrame:
    """One row per child run: run id, name, status, start, digest, output folder, job
    number, every param, every final metric."""
    runs = store.call("list the sweep's runs", lambda: store.client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        max_results=10000,
    ))
    rows = []
    for run in runs:
        output_dir = run.data.tags.get("output_dir", "")
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "config_digest": run.data.tags.get(CONFIG_DIGEST_TAG) or run.info.run_id,
            "error": run.data.tags.get("error", ""),
            "warnings": run.data.tags.get(WARNINGS_TAG, ""),
            # Killed with its sweep before it recorded its config: a resumed sweep ran it again.
            "blank": (CONFIG_DIGEST_TAG not in run.data.tags
                      and ENDED_BY_RESUME_TAG in run.data.tags),
            "output_dir": output_dir,
            "job": job_number(output_dir),
        }
        row.update({f"param:{k}": v for k, v in run.data.params.items()})
        row.update({f"metric:{k}": v for k, v in run.data.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def warnings_line(children: pd.DataFrame) -> str | None:
    """``Warnings: ConvergenceWarning in 8 of 8 runs (e.g. <a run's message>)``: what the
    runs' ``warnings`` tags hold, counted by kind (None: no run warned)."""
    if children.empty or "warnings" not in children:
        return None
    kinds: dict[str, list[str]] = {}
    for text in children["warnings"]:
        for line in str(text or "").splitlines():
            kind, _, message = line.partition(": ")
            kinds.setdefault(kind, []).append(message)
    if not kinds:
        return None
    counted = "; ".join(f"{kind} in {len(messages)} of {len(children)} runs"
                        for kind, messages in kinds.items())
    example = next(iter(kinds.values()))[0]
    return (f"Warnings: {counted} (e.g. {example}); each run's {WARNINGS_TAG} tag has "
            "its own")


def job_number(output_dir: str | None) -> float:
    """A job's number in its sweep: the name of its output folder (``hydra.sweep.subdir``
    is ``${hydra.job.num}``); NaN when that is not a number."""
    name = Path(output_dir or "").name
    return float(name) if name.isdigit() else math.nan


def current_attempts(table: pd.DataFrame, identity: Sequence[str] = ()) -> pd.Series:
    """True for the attempt that counts for each job: its newest FINISHED run, else its
    newest run. A job is its ``config_digest`` and the values of the ``identity``
    columns (the swept keys the digest leaves out)."""
    if table.empty:
        return pd.Series(dtype=bool)
    order = table[~table["blank"].astype(bool)].assign(_done=table["status"] == "FINISHED")
    order = order.sort_values(["_done", "start_time"], ascending=False, kind="stable")
    keys = ["config_digest", *[c for c in identity if c in order.columns]]
    kept = order.astype({c: str for c in keys}).drop_duplicates(keys).index
    return table.index.isin(kept)


def swept_params(table: pd.DataFrame) -> list[str]:
    """The param columns whose value differs between children."""
    params = [c for c in table.columns if c.startswith("param:")]
    return [c for c in params if table[c].astype(str).nunique(dropna=False) > 1]


def is_setting(param: str) -> bool:
    """A param that defines a configuration: not a seed, not bookkeeping (what the config
    digest leaves out)."""
    return not is_seed_param(param) and not is_bookkeeping(param)


def defines_configuration(param: str, swept: Iterable[str]) -> bool:
    """A setting, or any other key the sweep varies (``swept``), seeds aside."""
    return is_setting(param) or (param in set(swept) and not is_seed_param(param))


def final_metrics(table: pd.DataFrame) -> list[str]:
    """The children's final metrics (stage times left out)."""
    return [c.removeprefix("metric:") for c in table.columns
            if c.startswith("metric:") and not c.startswith("metric:time_")]


def seed_groups(children: pd.DataFrame, settings: list[str], metrics: list[str]
                ) -> pd.DataFrame:
    """One row per configuration: its settings, how many runs it has and how many did not
    finish, the runs' ids, its first job, and per metric the statistics of
    :func:`~pipeline.tracking.stats.mean_interval` over the finished runs (columns
    ``<metric>_<stat>``)."""
    rows = []
    grouped = children.groupby(settings, dropna=False, sort=False) if settings else [((), children)]
    for key, members in grouped:
        values = key if isinstance(key, tuple) else (key,)
        finished = members[members["status"] == "FINISHED"]
        missing = len(members) - len(finished)
        row: dict[str, Any] = {s.removeprefix("param:"): v for s, v in zip(settings, values,
                                                                           strict=True)}
        jobs = (pd.to_numeric(members["job"], errors="coerce") if "job" in members
                else pd.Series(dtype=float))
        row.update({"n": len(finished), "n_runs": len(members), "n_failed": missing,
                    "note": (f"{missing} of {len(members)} runs did not finish: statistics over "
                             f"{len(finished)}" if missing else ""),
                    "run_ids": " ".join(members["run_id"]),
                    "first_job": float(jobs.min()) if jobs.notna().any() else math.nan,
                    "first_run_id": str(min(members["run_id"], default=""))})
        for metric in metrics:
            column = f"metric:{metric}"
            numbers = (pd.to_numeric(finished[column], errors="coerce").dropna().to_numpy(float)
                       if column in finished else np.array([]))
            row.update({f"{metric}_{k}": v
                        for k, v in mean_interval(numbers, metric_range(metric)).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _sort(frame: pd.DataFrame, keys: list[tuple[str, bool]]) -> pd.DataFrame:
    """``frame`` sorted by ``keys`` ((column, ascending), first decides), missing values
    last in every key; columns that are absent are skipped."""
    keys = [(c, up) for c, up in keys if c in frame.columns]
    if frame.empty or not keys:
        return frame
    order = frame.assign(**{f"_missing{i}": frame[c].isna() for i, (c, _) in enumerate(keys)})
    columns: list[str] = []
    ascending: list[bool] = []
    for i, (column, up) in enumerate(keys):
        columns += [f"_missing{i}", column]
        ascending += [True, up]
    order = order.sort_values(columns, ascending=ascending, kind="mergesort")
    return frame.loc[order.index]


def rank_runs(table: pd.DataFrame, metric: str, direction: str,
              tie_metric: str | None = None) -> pd.DataFrame:
    """The FINISHED children with a value of ``metric``, best first: by ``metric`` in
    ``direction``, ties by ``tie_metric`` in its own direction, then by the job number,
    then by the run id."""
    column = f"metric:{metric}"
    if column not in table or table.empty:
        return table.iloc[0:0]
    values = pd.to_numeric(table[column], errors="coerce")
    finished = table[(table["status"] == "FINISHED") & np.isfinite(values.astype(float))]
    keys = [(column, direction != "maximize")]
    if tie_metric:
        keys.append((f"metric:{tie_metric}", lower_is_better(tie_metric)))
    return _sort(finished, [*keys, ("job", True), ("run_id", True)])


def rank_groups(groups: pd.DataFrame, metric: str, direction: str,
                tie_metric: str | None = None) -> pd.DataFrame:
    """Groups with a finite mean, best mean first; equal means: the better mean of
    ``tie_metric``, then the group's first job, then its first run id."""
    mean = f"{metric}_mean"
    if mean not in groups:
        return groups.iloc[0:0]
    scored = groups[np.isfinite(groups[mean].astype(float))]
    keys = [(mean, direction != "maximize")]
    if tie_metric:
        keys.append((f"{tie_metric}_mean", lower_is_better(tie_metric)))
    return _sort(scored, [*keys, ("first_job", True), ("first_run_id", True)])


def best_child(table: pd.DataFrame, metric: str, direction: str,
               tie_metric: str | None = None) -> pd.Series | None:
    ranked = rank_runs(table, metric, direction, tie_metric)
    return None if ranked.empty else ranked.iloc[0]


# -- the parent's own description ---------------------------------------------------------
def swept_keys(tags: Mapping[str, str]) -> list[str]:
    """The keys a sweep varies, from its parent's tags: its sweep overrides (``a=1,2``,
    ``range(...)``, ...) and Optuna's search space. Stored data: what does not parse is
    left out."""
    keys = [key for key, value in _overrides(tags) if _is_sweep(value)]
    keys += [key for key in _search_space(tags) if key not in keys]
    return keys


def identity_keys(swept: Iterable[str]) -> list[str]:
    """The swept keys that tell one job from another besides its config digest: the
    bookkeeping settings a sweep varies (``train.checkpoint_every=100,150``) that runs
    record as params (not ``sweep.*``, ``pipeline.*``, ``tracking.*`` or ``tags.*``)."""
    return [key for key in swept if is_bookkeeping(key)
            and not key.startswith(("sweep.", "pipeline.", "tracking.", "tags."))]


def sweep_params(tags: Mapping[str, str], settings: Mapping[str, str] | None = None
                 ) -> dict[str, str]:
    """The parent's params: every override of the sweep as typed (a swept key's value is
    its sweep, ``0.01,0.1``), Optuna's search space, ``swept`` (the keys it varies), and
    the sweep's own ``settings`` (metric, direction, tie metric)."""
    params: dict[str, str] = {}
    for key, value in _overrides(tags):
        params[key] = value
    for key, value in _search_space(tags).items():
        params[key] = value
    swept = swept_keys(tags)
    if swept:
        params[SWEPT_PARAM] = ", ".join(swept)
    for key, value in (settings or {}).items():
        params.setdefault(key, value)
    return {k[:250]: v[:PARAM_VALUE_LENGTH] for k, v in params.items() if k}


def _overrides(tags: Mapping[str, str]) -> list[tuple[str, str]]:
    try:
        stored = json.loads(tags.get(SWEEP_OVERRIDES_TAG) or "[]")
    except ValueError:
        return []
    pairs = []
    for item in stored if isinstance(stored, list) else []:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+~")
        if sep and key and not key.startswith("hydra."):
            pairs.append((key, value))
    return pairs


def _search_space(tags: Mapping[str, str]) -> dict[str, str]:
    try:
        stored = json.loads(tags.get(SEARCH_SPACE_TAG) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in stored.items()} if isinstance(stored, dict) else {}


def _is_sweep(value: str) -> bool:
    """Whether an override's value sweeps (Hydra's grammar: a list ``a,b``, ``range(..)``,
    ``choice(..)``, ``glob(..)``, ``interval(..)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(f"k={value}").is_sweep_override()
    except Exception:  # stored text Hydra does not parse: not a sweep we can read
        return False


# -- deciding -----------------------------------------------------------------------------
def decide(table: pd.DataFrame, metric: str, direction: str, tie_metric: str | None = None,
           swept: Sequence[str] = ()) -> Selection:
    """Rank a sweep's children (``table``, as :func:`children_table` reads it) and choose:
    runs by :func:`rank_runs`; with several runs per configuration, configurations by
    :func:`rank_groups`, compared with the best one seed by seed."""
    if table.empty:
        table = pd.DataFrame(columns=["run_id", "run_name", "status", "start_time",
                                      "config_digest", "error", "blank", "output_dir", "job"])
    identity = [f"param:{key}" for key in identity_keys(swept)]
    children = table[current_attempts(table, identity)]
    tie_column = f"metric:{tie_metric}"
    if tie_metric and (tie_column not in children
                       or not pd.to_numeric(children[tie_column], errors="coerce").notna().any()):
        tie_metric = None  # no run has it (no validation data): the job number decides
    params = [p for p in swept_params(children) if not p.startswith(("param:sweep.",
                                                                     "param:pipeline."))]
    settings = [p for p in params if defines_configuration(p.removeprefix("param:"), swept)]
    ranked_runs = rank_runs(children, metric, direction, tie_metric)
    measured = list(dict.fromkeys([*final_metrics(children), metric]))  # none if all failed
    groups = seed_groups(children, settings, measured) if not children.empty else None
    if groups is None or not (groups["n_runs"] > 1).any():  # nothing to average
        best = None if ranked_runs.empty else ranked_runs.iloc[0]
        return Selection(metric, direction, tie_metric, children, params, settings,
                         ranked_runs, best=best)
    ranked = rank_groups(groups, metric, direction, tie_metric)
    groups = pd.concat([ranked, groups.drop(ranked.index)])
    best = None
    best_by = "single run"
    comparisons = None
    if not ranked.empty:
        top = ranked.iloc[0]
        members = children[children["run_id"].isin(str(top["run_ids"]).split())]
        best = best_child(members, metric, direction, tie_metric)
        best_by = f"mean over {int(top['n'])} seeds"
        if top["n_failed"]:
            best_by += f" ({int(top['n_failed'])} of {int(top['n_runs'])} did not finish)"
        comparisons = compare_paired(children, ranked, settings, metric)
    return Selection(metric, direction, tie_metric, children, params, settings, ranked_runs,
                     groups=groups, ranked_groups=ranked, comparisons=comparisons, best=best,
                     best_by=best_by)


def _pair_columns(children: pd.DataFrame) -> list[str]:
    """The params that say which random streams a run used: the seeds it ran with
    (``seeds.*``), else the seeds it was given."""
    derived = sorted(c for c in children.columns if c.startswith("param:seeds."))
    return derived or sorted(c for c in children.columns
                             if c.removeprefix("param:") in SEED_PARAMS)


def compare_paired(children: pd.DataFrame, ranked: pd.DataFrame, settings: list[str],
                   metric: str) -> pd.DataFrame | None:
    """The best configuration (``ranked``'s first) against each other ranked one, paired
    by seed on ``metric``: one row per comparison, in ranking order (Holm-corrected over
    them). None without seeds to pair on."""
    pairs = _pair_columns(children)
    column = f"metric:{metric}"
    if not pairs or column not in children or len(ranked) < 2:
        return None
    finished = children[children["status"] == "FINISHED"]

    def by_seed(group: pd.Series) -> pd.Series:
        members = finished[finished["run_id"].isin(str(group["run_ids"]).split())]
        values = pd.to_numeric(members[column], errors="coerce")
        keys = members[pairs].astype(str).agg("|".join, axis=1)
        return pd.Series(values.to_numpy(float), index=keys.to_numpy()).dropna()

    best = by_seed(ranked.iloc[0])
    best = best[~best.index.duplicated()]
    names = [s.removeprefix("param:") for s in settings]
    rows: list[dict[str, Any]] = []
    for _, group in ranked.iloc[1:].iterrows():
        other = by_seed(group)
        other = other[~other.index.duplicated()]
        common = best.index.intersection(other.index)
        paired = paired_difference(best[common].to_numpy(), other[common].to_numpy(),
                                   metric_range(metric))
        rows.append({"configuration": ", ".join(f"{n}={group[n]}" for n in names),
                     **{n: group[n] for n in names}, "paired": paired})
    t_holm = holm([r["paired"].t_p for r in rows])
    w_holm = holm([r["paired"].wilcoxon_p for r in rows])
    table = []
    for row, t_adj, w_adj in zip(rows, t_holm, w_holm, strict=True):
        paired: Paired = row.pop("paired")
        paired = replace(paired, t_p_holm=t_adj, wilcoxon_p_holm=w_adj)
        table.append({**row, "n_pairs": paired.n, "diff_mean": paired.mean,
                      "diff_std": paired.std, "diff_ci95_low": paired.ci95_low,
                      "diff_ci95_high": paired.ci95_high, "t_p": paired.t_p,
                      "t_p_holm": paired.t_p_holm, "wilcoxon_p": paired.wilcoxon_p,
                      "wilcoxon_p_holm": paired.wilcoxon_p_holm,
                      "distinguishable": paired.distinguishable,
                      "seeds_for_80pct_power": paired.seeds_needed,
                      "_paired": paired})
    return pd.DataFrame(table)


def comparison_line(selection: Selection) -> str | None:
    """One line: is the best configuration distinguishable from the runner-up, and about
    how many seeds would separate them."""
    table = selection.comparisons
    if table is None or table.empty:
        return None
    row = table.iloc[0]
    paired: Paired = row["_paired"]
    metric = selection.metric
    if paired.n < 2:
        return (f"Best vs runner-up ({row['configuration']}): {paired.n} seed(s) in common, "
                "too few to compare them")
    verdict = "distinguishable" if paired.distinguishable else "not distinguishable"
    n = len(table)
    return (f"Best vs runner-up ({row['configuration']}): {metric} difference "
            f"{paired.mean:+.4f} (best - runner-up, paired over {paired.n} seeds; 95% CI "
            f"[{paired.ci95_low:+.4f}, {paired.ci95_high:+.4f}]); paired t p="
            f"{format_p(paired.t_p)}, Wilcoxon p={format_p(paired.wilcoxon_p)} (Holm over {n} "
            f"comparison{'s' if n > 1 else ''}: {format_p(paired.t_p_holm)}, "
            f"{format_p(paired.wilcoxon_p_holm)}): {verdict}; seeds for 80% power: "
            f"{describe_seeds(paired)}")


def estimate_metric(metric: str) -> str:
    """The test metric that estimates how the chosen one does: ``val_f1`` -> ``test_f1``."""
    return "test_" + metric.partition("_")[2]


def final_estimate(selection: Selection) -> str | None:
    """The chosen run's (or configuration's) test figure, labelled as the final estimate."""
    name = estimate_metric(selection.metric)
    biased = selection.metric.startswith("test_")
    label = ("test split; biased: it also chose" if biased
             else "test split, not used for selection")
    top = selection.best_group
    if top is not None:
        mean, std = top.get(f"{name}_mean"), top.get(f"{name}_std")
        if mean is None or not math.isfinite(float(mean)):
            return None
        text = f"{name} {float(mean):.4f}"
        if std is not None and math.isfinite(float(std)):
            low, high = float(top[f"{name}_ci95_low"]), float(top[f"{name}_ci95_high"])
            text += (f" ± {float(std):.4f} (mean ± std over {int(top['n'])} seeds), 95% CI "
                     f"[{low:.4f}, {high:.4f}]")
        return f"Final estimate ({label}): {text}"
    best = selection.best
    if best is None or not math.isfinite(float(best.get(f"metric:{name}", math.nan))):
        return None
    return (f"Final estimate ({label}): {name} {float(best[f'metric:{name}']):.4f} "
            f"(run {best['run_name']})")


def ranked_by(selection: Selection) -> str:
    tie = selection.tie_metric
    ties = f"ties: {tie}, then the job number" if tie else "ties: the job number"
    return f"{selection.metric} ({selection.best_by}; {ties})"


# -- writing ------------------------------------------------------------------------------
def markdown_table(columns: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs tabulate)."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _markdown(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table, floats to 4 decimals."""
    if frame.empty:
        return "no child runs\n"
    rows = [[_cell(v) for v in row] for row in frame.itertuples(False)]
    return markdown_table(list(frame.columns), rows)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return value


def _as_number(values: pd.Series) -> pd.Series | None:
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().all() else None


def _plot_metric_vs_params(table: pd.DataFrame, params: list[str], metric: str,
                           folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column = f"metric:{metric}"
    paths = []
    for param in params:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        values = table[param].map(str)
        numbers = _as_number(table[param])
        if numbers is not None:
            ax.scatter(numbers, table[column])
            if (numbers > 0).all() and numbers.max() / numbers.min() >= 100:
                ax.set_xscale("log")
        else:
            labels = sorted(values.unique())
            positions = values.map({v: i for i, v in enumerate(labels)})
            ax.scatter(positions, table[column])
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        paths.append(_save_vs(fig, ax, metric, param.removeprefix("param:"), metric, folder))
    return paths


def _tight(fig: Any) -> None:
    """Fit the figure's labels; a legend too wide to fit stays as it is, without a warning
    (the sweep printed one per plot after its job lines)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Tight layout not applied")
        fig.tight_layout()


def _save_vs(fig: Any, ax: Any, metric: str, name: str, ylabel: str, folder: Path) -> Path:
    """Label a '<metric> vs <setting>' plot, write it as a PNG in ``folder`` and close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(name)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{metric} vs {name}")
    _tight(fig)
    path = folder / f"{metric}_vs_{name.replace('/', '_')}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_curves(store: Store, table: pd.DataFrame, params: list[str], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, row in table.head(CURVES_AT_MOST).iterrows():
        history = store.call("read a child's training curve", lambda r=row[
            "run_id"]: store.client.get_metric_history(r, CURVE_METRIC))
        if not history:
            continue
        history = sorted(history, key=lambda m: m.step)
        label = ", ".join(f"{p.removeprefix('param:')}={row[p]}" for p in params) or row["run_name"]
        ax.plot([m.step for m in history], [m.value for m in history], label=label, lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(CURVE_METRIC)
    ax.set_yscale("log")
    shown = min(len(table), CURVES_AT_MOST)
    ax.set_title("training curves of every child run" if shown == len(table)
                 else f"training curves of the {shown} best child runs")
    ax.legend(fontsize=7)
    _tight(fig)
    path = folder / "training_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_groups(groups: pd.DataFrame, settings: list[str], metrics: list[str],
                 folder: Path) -> list[Path]:
    """Per metric and swept setting: each configuration's mean with its 95 % interval (an
    asymmetric one: truncated to the metric's range), one line per combination of the
    other settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = [s.removeprefix("param:") for s in settings]
    for metric in metrics:
        for name in names:
            others = [n for n in names if n != name]
            numbers = _as_number(groups[name])
            x_of = (numbers if numbers is not None else groups[name].map(str).map(
                {v: i for i, v in enumerate(sorted(groups[name].map(str).unique()))}))
            fig, ax = plt.subplots(figsize=(5.5, 3.8))
            lines = groups.groupby(others, dropna=False, sort=True) if others else [((), groups)]
            for key, members in lines:
                order = x_of[members.index].sort_values().index
                mean = members.loc[order, f"{metric}_mean"].astype(float)
                below = (mean - members.loc[order, f"{metric}_ci95_low"].astype(float)).fillna(0)
                above = (members.loc[order, f"{metric}_ci95_high"].astype(float) - mean).fillna(0)
                values = key if isinstance(key, tuple) else (key,)
                label = ", ".join(f"{o}={v}" for o, v in zip(others, values, strict=True))
                ax.errorbar(x_of[order], mean, yerr=[below, above], marker="o", capsize=3, lw=1,
                            label=label or None)
            if numbers is not None and (numbers > 0).all() and numbers.max() / numbers.min() >= 100:
                ax.set_xscale("log")
            if numbers is None:
                labels = sorted(groups[name].map(str).unique())
                ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
            if others and len(groups) <= 40:
                ax.legend(fontsize=7)
            paths.append(_save_vs(fig, ax, metric, name, f"{metric} (mean, 95 % CI)", folder))
    return paths


def _interval(low: Any, high: Any) -> str:
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return ""
    return f"[{float(low):.4f}, {float(high):.4f}]"


def _mean_std(mean: Any, std: Any) -> str:
    if not math.isfinite(float(mean)):
        return ""
    return (f"{float(mean):.4f} ± {float(std):.4f}" if math.isfinite(float(std))
            else f"{float(mean):.4f}")


def _group_view(groups: pd.DataFrame, selection: Selection, measured: list[str]
                ) -> pd.DataFrame:
    """The groups table as people read it: settings, n, the selection and tie metrics and
    the test metrics as "mean ± std" with their 95 % CI."""
    names = [s.removeprefix("param:") for s in selection.settings]
    view = groups[[*names, "n", "n_failed"]].copy()
    for metric in _headline(selection):
        if f"{metric}_mean" not in groups:
            continue
        view[f"{metric} mean ± std"] = [_mean_std(m, s) for m, s in zip(
            groups[f"{metric}_mean"], groups[f"{metric}_std"], strict=True)]
        view[f"{metric} 95% CI"] = [_interval(lo, hi) for lo, hi in zip(
            groups[f"{metric}_ci95_low"], groups[f"{metric}_ci95_high"], strict=True)]
    for other in measured:
        if other.startswith("test_") and other not in _headline(selection):
            view[f"{other} mean"] = groups[f"{other}_mean"]
    view["note"] = groups["note"]
    return view


def _headline(selection: Selection) -> list[str]:
    """The metrics a summary shows in full: the selection metric, the tie metric and the
    final estimate's."""
    return list(dict.fromkeys([selection.metric, *([selection.tie_metric]
                                                   if selection.tie_metric else []),
                               estimate_metric(selection.metric)]))


def _comparison_view(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The paired comparisons as people read them."""
    rows = []
    for _, row in table.iterrows():
        paired: Paired = row["_paired"]
        rows.append({"vs best": row["configuration"], "seeds": paired.n,
                     f"{metric} difference (best - other)": f"{paired.mean:+.4f}"
                     if math.isfinite(paired.mean) else "",
                     "95% CI": (f"[{paired.ci95_low:+.4f}, {paired.ci95_high:+.4f}]"
                                if math.isfinite(paired.ci95_low) else ""),
                     "paired t p (Holm)": f"{format_p(paired.t_p)} ({format_p(paired.t_p_holm)})",
                     "Wilcoxon p (Holm)": (f"{format_p(paired.wilcoxon_p)} "
                                           f"({format_p(paired.wilcoxon_p_holm)})"),
                     "distinguishable": "yes" if paired.distinguishable else "no",
                     "seeds for 80% power": describe_seeds(paired)})
    return pd.DataFrame(rows)


def _leaderboard(selection: Selection) -> pd.DataFrame:
    """The top configurations (grouped) or runs: their settings, the selection metric
    (labelled: mean ± std and the 95 % CI over the seeds) and the tie metric."""
    metric, tie = selection.metric, selection.tie_metric
    if selection.ranked_groups is not None:
        ranked = selection.ranked_groups.head(LEADERBOARD_SIZE)
        names = [s.removeprefix("param:") for s in selection.settings]
        board = ranked[[*names, "n"]].copy()
        board[f"{metric} mean ± std"] = [_mean_std(m, s) for m, s in zip(
            ranked[f"{metric}_mean"], ranked[f"{metric}_std"], strict=True)]
        board["95% CI"] = [_interval(lo, hi) for lo, hi in zip(
            ranked[f"{metric}_ci95_low"], ranked[f"{metric}_ci95_high"], strict=True)]
        if tie and f"{tie}_mean" in ranked and tie != metric:
            board[f"{tie} mean"] = [f"{v:.4f}" if math.isfinite(v) else ""
                                    for v in ranked[f"{tie}_mean"].astype(float)]
        return board.reset_index(drop=True)
    ranked = selection.ranked_runs.head(LEADERBOARD_SIZE)
    if ranked.empty:
        return pd.DataFrame()
    board = ranked[["run_name", *selection.params]].rename(
        columns=lambda c: c.removeprefix("param:"))
    board[metric] = [f"{v:.4f}" for v in ranked[f"metric:{metric}"].astype(float)]
    if tie and tie != metric and f"metric:{tie}" in ranked:
        board[tie] = [f"{v:.4f}" if math.isfinite(v) else ""
                      for v in pd.to_numeric(ranked[f"metric:{tie}"], errors="coerce")]
    return board.reset_index(drop=True)


def _parent_figures(selection: Selection, measured: list[str]
                    ) -> tuple[dict[str, float], dict[str, str]]:
    """The parent's metrics and tags for the decision: the best run's figures
    (``best_run_<metric>``), the best configuration's (``best_config_<metric>_mean``, and
    the std and 95 % CI of the selection, tie and test metrics), and the comparison with
    the runner-up (``runner_up_*``)."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {"sweep_metric": selection.metric, "ranked_by": ranked_by(selection)}
    if selection.tie_metric:
        tags[TIE_METRIC_TAG] = selection.tie_metric
    best = selection.best
    if best is not None:
        for column, value in best.items():
            if str(column).startswith("metric:"):
                number = pd.to_numeric(value, errors="coerce")
                if isinstance(number, float | np.floating) and math.isfinite(number):
                    metrics[f"best_run_{str(column).removeprefix('metric:')}"] = float(number)
        tags.update({"best_run_id": str(best["run_id"]), "best_run_name": str(best["run_name"]),
                     "best_by": selection.best_by})
        names = (selection.settings if selection.best_group is not None else selection.params)
        for param in names:
            tags[f"best.{param.removeprefix('param:')}"] = str(best[param])
    top = selection.best_group
    if top is not None:
        spread = {selection.metric, selection.tie_metric, *[m for m in measured
                                                            if m.startswith("test_")]}
        for name in measured:
            for stat in STATS if name in spread else ("mean",):
                value = float(top.get(f"{name}_{stat}", math.nan))
                if math.isfinite(value) and stat not in ("min", "max"):
                    metrics[f"best_config_{name}_{stat}"] = value
        metrics["best_config_n"] = float(top["n"])
    table = selection.comparisons
    if table is not None and not table.empty:
        paired: Paired = table.iloc[0]["_paired"]
        figures = {"n_pairs": paired.n, "diff_mean": paired.mean,
                   "diff_ci95_low": paired.ci95_low, "diff_ci95_high": paired.ci95_high,
                   "t_p": paired.t_p, "t_p_holm": paired.t_p_holm,
                   "wilcoxon_p": paired.wilcoxon_p, "wilcoxon_p_holm": paired.wilcoxon_p_holm,
                   "seeds_for_80pct_power": paired.seeds_needed}
        metrics.update({f"runner_up_{k}": float(v) for k, v in figures.items()
                        if v is not None and math.isfinite(float(v))})
        tags["runner_up"] = str(table.iloc[0]["configuration"])
        tags["runner_up_distinguishable"] = str(paired.distinguishable).lower()
        tags["n_distinguishable_from_best"] = str(int(table["distinguishable"].sum()))
    return metrics, tags


def _report(selection: Selection, summary: Summary, measured: list[str]
            ) -> list[tuple[str, list[str], pd.DataFrame | None]]:
    """summary.md / summary.html as sections: (title, lines, table)."""
    lines = [f"Ranked by {summary.ranked_by}, then the run id.",
             f"Best run: {selection.best['run_name']} ({selection.best['run_id']})"
             if selection.best is not None else "No run finished with a value of "
             f"{selection.metric}."]
    if selection.metric.startswith("test_"):
        lines.append(f"Selected on the test split ({selection.metric}): the final estimate is "
                     "optimistically biased; select on a val_* metric instead.")
    if summary.final_estimate:
        lines.append(summary.final_estimate)
    sections: list[tuple[str, list[str], pd.DataFrame | None]] = [
        ("Decision", lines, summary.leaderboard if not summary.leaderboard.empty else None)]
    if selection.groups is not None:
        sections.append(("Configurations over seeds", [
            "Each figure: mean ± std (sample std over the seeds, n runs), and the " +
            INTERVAL_METHOD + "."], _group_view(selection.groups, selection, measured)))
    if selection.comparisons is not None and not selection.comparisons.empty:
        sections.append(("Paired comparison with the best configuration", [
            summary.comparison or "", PAIRED_METHOD + "."],
            _comparison_view(selection.comparisons, selection.metric)))
    return sections


def _write_report(sections: list[tuple[str, list[str], pd.DataFrame | None]], folder: Path
                  ) -> None:
    markdown = ["# Sweep summary", ""]
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>Sweep summary</title>"
            "</head><body><h1>Sweep summary</h1>"]
    for title, lines, table in sections:
        markdown += [f"## {title}", "", *[f"{line}  " for line in lines if line], ""]
        page.append(f"<h2>{html.escape(title)}</h2>")
        page += [f"<p>{html.escape(line)}</p>" for line in lines if line]
        if table is not None:
            markdown += [_markdown(table), ""]
            page.append(table.to_html(index=False, na_rep=""))
    page.append("</body></html>")
    (folder / "summary.md").write_text("\n".join(markdown))
    (folder / "summary.html").write_text("\n".join(page))


def log_new_params(store: Store, run_id: str, params: Mapping[str, str],
                   existing: Mapping[str, str]) -> None:
    """Log the ``params`` the run does not have yet (a param's value cannot change: one a
    resumed sweep already logged keeps its first value)."""
    from mlflow.entities import Param

    new = [Param(k, v) for k, v in params.items() if k not in existing]
    for start in range(0, len(new), PARAMS_PER_CALL):
        chunk = new[start:start + PARAMS_PER_CALL]
        store.call("log the sweep's params", lambda c=chunk: store.client.log_batch(
            run_id, params=c))


def summarise(store: Store, experiment_id: str, parent_id: str, metric: str, direction: str,
              *, tie_metric: str | None = None, plots: bool = True,
              on_best: Callable[[str], None] | None = None) -> Summary:
    """Write the summary onto the parent run; return how its children ended and the
    leaderboard. Reads the children with one query (and the best few curves), whatever
    their number; the parent's ``time_summary_s`` says how long it took. ``tie_metric``:
    None takes the parent's own (its ``sweep_tie_metric`` tag). ``on_best`` gets the best
    child's run id as soon as it is known, before the tables and plots."""
    started = time.perf_counter()
    client = store.client
    parent = store.call("read the sweep's parent run", lambda: client.get_run(parent_id))
    if tie_metric is None:
        tie_metric = parent.data.tags.get(TIE_METRIC_TAG) or None
    swept = swept_keys(parent.data.tags)
    table = children_table(store, experiment_id, parent_id)
    selection = decide(table, metric, direction, tie_metric, swept)
    if table.empty:
        table = pd.DataFrame(columns=list(selection.children.columns))
    table["attempt"] = np.where(table["run_id"].isin(selection.children["run_id"]),
                                "current", "superseded")
    children = selection.children
    status = children["status"]
    counts = Counts(children=len(children), failed=int(status.isin(["FAILED", "RUNNING"]).sum()),
                    killed=int((status == "KILLED").sum()), runs=len(table))
    # Counted once, as tags (what every reader reads).
    tags = {"n_children": str(counts.children), "n_failed": str(counts.failed),
            "n_killed": str(counts.killed)}
    if counts.runs > counts.children:
        tags["n_superseded"] = str(counts.runs - counts.children)
    measured = list(dict.fromkeys([*final_metrics(children), metric]))
    metrics, decided = _parent_figures(selection, measured)
    tags.update(decided)
    if selection.best is not None and on_best is not None:
        on_best(str(selection.best["run_id"]))
    settings = {"sweep.metric": metric, "sweep.direction": direction}
    if tie_metric:
        settings["sweep.tie_metric"] = tie_metric
    log_new_params(store, parent_id, sweep_params(parent.data.tags, settings),
                   parent.data.params)
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    store.call("write the sweep summary", lambda: client.log_batch(
        parent_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v[:8000]) for k, v in tags.items()]))
    summary = Summary(counts=counts, best_by=selection.best_by,
                      leaderboard=_leaderboard(selection),
                      ranked_run_ids=_ranked_ids(selection),
                      best_run_id=(str(selection.best["run_id"])
                                   if selection.best is not None else None),
                      final_estimate=final_estimate(selection),
                      comparison=comparison_line(selection), ranked_by=ranked_by(selection),
                      warnings=warnings_line(children))
    if summary.comparison:
        store.call("tag the comparison", lambda: client.log_batch(parent_id, tags=[
            RunTag("runner_up_comparison", summary.comparison[:8000])]))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "summary"
        folder.mkdir()
        _write_tables(selection, table, measured, folder)
        _write_report(_report(selection, summary, measured), folder)
        scored = selection.ranked_runs
        if plots and not scored.empty:
            groups = selection.groups
            shown_metrics = [m for m in _headline(selection) if m in measured]
            if groups is not None and selection.settings:
                _plot_groups(groups[groups["n"] > 0], selection.settings, shown_metrics, folder)
            else:  # the derived seeds follow the swept seed one to one
                for shown in shown_metrics:
                    if f"metric:{shown}" in scored:
                        _plot_metric_vs_params(scored, [p for p in selection.params
                                                        if not p.startswith("param:seeds.")],
                                               shown, folder)
            _plot_curves(store, scored, selection.params, folder)
        store.call("log the sweep summary", lambda: client.log_artifacts(
            parent_id, str(folder), "summary"))
    seconds = time.perf_counter() - started
    store.call("time the sweep summary", lambda: client.log_batch(parent_id, metrics=[
        Metric("time_summary_s", seconds, int(time.time() * 1000), 0)]))
    return summary


def best_run(store: Store, experiment_id: str, parent_id: str, metric: str, direction: str,
             tie_metric: str | None = None) -> tuple[str, str] | None:
    """The run :func:`summarise` would name best now: (run id, output folder); None
    before any run finished with a value of ``metric``."""
    parent = store.call("read the sweep's parent run", lambda: store.client.get_run(parent_id))
    table = children_table(store, experiment_id, parent_id)
    best = decide(table, metric, direction, tie_metric, swept_keys(parent.data.tags)).best
    return None if best is None else (str(best["run_id"]), str(best["output_dir"]))


def _ranked_ids(selection: Selection) -> list[str]:
    """The current children, best run first: the ranked runs, then the others."""
    ranked = list(selection.ranked_runs["run_id"])
    return ranked + [r for r in selection.children["run_id"] if r not in set(ranked)]


def _write_tables(selection: Selection, table: pd.DataFrame, measured: list[str],
                  folder: Path) -> None:
    """children.csv/md/html, and groups.* and comparisons.csv for seed groups."""
    children = selection.children
    shown = ["run_name", "status", *selection.params,
             *[c for c in children.columns if c.startswith(("metric:val_", "metric:test_"))],
             "run_id"]
    ranked = selection.ranked_runs
    view = pd.concat([ranked, children.drop(ranked.index)])
    view = view[[c for c in shown if c in view.columns]]
    view = view.rename(columns=lambda c: c.removeprefix("param:").removeprefix("metric:"))
    table.drop(columns=["start_time", "blank"]).to_csv(folder / "children.csv", index=False)
    (folder / "children.md").write_text(_markdown(view))
    (folder / "children.html").write_text(view.to_html(index=False, na_rep=""))
    groups = selection.groups
    if groups is None:
        return
    groups.to_csv(folder / "groups.csv", index=False)
    readable = _group_view(groups, selection, measured)
    (folder / "groups.md").write_text(_markdown(readable))
    (folder / "groups.html").write_text(readable.to_html(index=False, na_rep=""))
    if selection.comparisons is not None and not selection.comparisons.empty:
        selection.comparisons.drop(columns=["_paired"]).to_csv(folder / "comparisons.csv",
                                                                index=False)
