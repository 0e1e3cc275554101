"""The summary a sweep's parent run holds: tables, seed statistics, the best configuration,
comparison plots, and the leaderboard the sweep prints.

Read back from MLflow (the children are the runs tagged ``mlflow.parentRunId``), so
it works the same whichever launcher ran the jobs and wherever they ran.

Children that differ only in their seeds form a *group* (one configuration); with more
than one run per group, a group's final metrics are summarised as n, mean, standard
deviation, min, max and a 95 % confidence interval of the mean (Student's t), and the
best configuration is the best group mean (ties: the smaller standard deviation), not
the luckiest seed. A resumed sweep can hold several attempts at one configuration (same
``config_digest``): the finished one counts, the others are listed as superseded.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.digest import is_bookkeeping
from pipeline.tracking.record import CONFIG_DIGEST_TAG, ENDED_BY_RESUME_TAG
from pipeline.tracking.store import Store

CURVE_METRIC = "train_loss"
CURVES_AT_MOST = 10  # training curves drawn: the best children's (one read each)
# The params that choose random streams; every other swept param is a setting.
SEED_PARAMS = frozenset({"seed", "data.seed", "split.seed", "model.seed", "train.shuffle_seed"})
LEADERBOARD_SIZE = 5
CONFIDENCE = 0.95
STATS = ("mean", "std", "min", "max", "ci95_low", "ci95_high")


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


def is_seed_param(name: str) -> bool:
    """A param that only picks random streams: the seeds set and the seeds derived."""
    return name in SEED_PARAMS or name.startswith("seeds.")


def children_table(store: Store, experiment_id: str, parent_id: str) -> pd.DataFrame:
    """One row per child run: run id, name, status, start, digest, every param, every
    final metric."""
    runs = store.call("list the sweep's runs", lambda: store.client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        max_results=10000,
    ))
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "config_digest": run.data.tags.get(CONFIG_DIGEST_TAG) or run.info.run_id,
            "error": run.data.tags.get("error", ""),
            # Killed with its sweep before it recorded its config: a resumed sweep ran it again.
            "blank": (CONFIG_DIGEST_TAG not in run.data.tags
                      and ENDED_BY_RESUME_TAG in run.data.tags),
        }
        row.update({f"param:{k}": v for k, v in run.data.params.items()})
        row.update({f"metric:{k}": v for k, v in run.data.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def current_attempts(table: pd.DataFrame) -> pd.Series:
    """True for the attempt that counts for each configuration: its newest FINISHED run,
    else its newest run."""
    if table.empty:
        return pd.Series(dtype=bool)
    order = table[~table["blank"].astype(bool)].assign(_done=table["status"] == "FINISHED")
    order = order.sort_values(["_done", "start_time"], ascending=False, kind="stable")
    kept = order.drop_duplicates("config_digest").index
    return table.index.isin(kept)


def swept_params(table: pd.DataFrame) -> list[str]:
    """The param columns whose value differs between children."""
    params = [c for c in table.columns if c.startswith("param:")]
    return [c for c in params if table[c].astype(str).nunique(dropna=False) > 1]


def is_setting(param: str) -> bool:
    """A param that defines a configuration: not a seed, not bookkeeping (what the config
    digest leaves out)."""
    return not is_seed_param(param) and not is_bookkeeping(param)


def final_metrics(table: pd.DataFrame) -> list[str]:
    """The children's final metrics (stage times left out)."""
    return [c.removeprefix("metric:") for c in table.columns
            if c.startswith("metric:") and not c.startswith("metric:time_")]


def mean_interval(values: np.ndarray) -> dict[str, float]:
    """n values -> mean, sample std, min, max and the 95 % Student-t interval of the mean
    (``mean ± t_{0.975, n-1} · std / √n``); NaN where n is too small."""
    from scipy.stats import t as student_t

    n = len(values)
    nan = float("nan")
    if n == 0:
        return dict.fromkeys(STATS, nan)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else nan
    half = float(student_t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)) if n > 1 else nan
    return {"mean": mean, "std": std, "min": float(values.min()), "max": float(values.max()),
            "ci95_low": mean - half, "ci95_high": mean + half}


def seed_groups(children: pd.DataFrame, settings: list[str], metrics: list[str]
                ) -> pd.DataFrame:
    """One row per configuration: its settings, how many runs it has and how many did not
    finish, the runs' ids, and per metric the statistics of :func:`mean_interval` over the
    finished runs (columns ``<metric>_<stat>``)."""
    rows = []
    grouped = children.groupby(settings, dropna=False, sort=False) if settings else [((), children)]
    for key, members in grouped:
        values = key if isinstance(key, tuple) else (key,)
        finished = members[members["status"] == "FINISHED"]
        missing = len(members) - len(finished)
        row: dict[str, Any] = {s.removeprefix("param:"): v for s, v in zip(settings, values,
                                                                           strict=True)}
        row.update({"n": len(finished), "n_runs": len(members), "n_failed": missing,
                    "note": (f"{missing} of {len(members)} runs did not finish: statistics over "
                             f"{len(finished)}" if missing else ""),
                    "run_ids": " ".join(members["run_id"])})
        for metric in metrics:
            column = f"metric:{metric}"
            numbers = (pd.to_numeric(finished[column], errors="coerce").dropna().to_numpy(float)
                       if column in finished else np.array([]))
            row.update({f"{metric}_{k}": v for k, v in mean_interval(numbers).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def rank_groups(groups: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    """Groups with a finite mean, best mean first; equal means: the smaller std first."""
    mean, std = f"{metric}_mean", f"{metric}_std"
    if mean not in groups:
        return groups.iloc[0:0]
    scored = groups[np.isfinite(groups[mean].astype(float))]
    return scored.sort_values([mean, std], ascending=[direction != "maximize", True],
                              na_position="last", kind="stable")


def best_child(table: pd.DataFrame, metric: str, direction: str) -> pd.Series | None:
    ranked = rank_children(table, metric, direction)
    return None if ranked.empty else ranked.iloc[0]


def rank_children(table: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    """The FINISHED children with a value of ``metric``, best first."""
    column = f"metric:{metric}"
    if column not in table or table.empty:
        return table.iloc[0:0]
    finished = table[(table["status"] == "FINISHED") & table[column].notna()]
    return finished.sort_values(column, ascending=direction != "maximize", kind="stable")


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
    rows = [[f"{v:.4f}" if isinstance(v, float) else v for v in row]
            for row in frame.itertuples(False)]
    return markdown_table(list(frame.columns), rows)


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


def _save_vs(fig: Any, ax: Any, metric: str, name: str, ylabel: str, folder: Path) -> Path:
    """Label a '<metric> vs <setting>' plot, write it as a PNG in ``folder`` and close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(name)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{metric} vs {name}")
    fig.tight_layout()
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
    fig.tight_layout()
    path = folder / "training_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_groups(groups: pd.DataFrame, settings: list[str], metrics: list[str],
                 folder: Path) -> list[Path]:
    """Per metric and swept setting: each configuration's mean with its 95 % interval,
    one line per combination of the other settings."""
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
                half = (members.loc[order, f"{metric}_ci95_high"].astype(float) - mean).fillna(0)
                values = key if isinstance(key, tuple) else (key,)
                label = ", ".join(f"{o}={v}" for o, v in zip(others, values, strict=True))
                ax.errorbar(x_of[order], mean, yerr=half, marker="o", capsize=3, lw=1,
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


def _group_view(groups: pd.DataFrame, settings: list[str], metric: str,
                metrics: list[str]) -> pd.DataFrame:
    """The groups table as people read it: settings, n, the sweep metric's statistics and
    the other test metrics' means."""
    names = [s.removeprefix("param:") for s in settings]
    view = groups[[*names, "n", "n_failed"]].copy()
    for stat in STATS:
        view[f"{metric} {stat}"] = groups[f"{metric}_{stat}"]
    for other in metrics:
        if other != metric and other.startswith("test_"):
            view[f"{other} mean"] = groups[f"{other}_mean"]
    view["note"] = groups["note"]
    return view


def _leaderboard(children: pd.DataFrame, groups: pd.DataFrame | None, settings: list[str],
                 params: list[str], metric: str, direction: str) -> pd.DataFrame:
    """The top configurations (grouped) or runs: their settings and the sweep metric."""
    if groups is not None:
        ranked = rank_groups(groups, metric, direction).head(LEADERBOARD_SIZE)
        names = [s.removeprefix("param:") for s in settings]
        board = ranked[[*names, "n"]].copy()
        board[metric] = [
            f"{m:.4f} ± {h - m:.4f}" if math.isfinite(h) else f"{m:.4f}"
            for m, h in zip(ranked[f"{metric}_mean"], ranked[f"{metric}_ci95_high"],
                            strict=True)]
        return board.reset_index(drop=True)
    ranked = rank_children(children, metric, direction).head(LEADERBOARD_SIZE)
    if ranked.empty:
        return pd.DataFrame()
    board = ranked[["run_name", *params]].rename(
        columns=lambda c: c.removeprefix("param:"))
    board[metric] = [f"{v:.4f}" for v in ranked[f"metric:{metric}"]]
    return board.reset_index(drop=True)


def summarise(store: Store, experiment_id: str, parent_id: str, metric: str, direction: str,
              *, plots: bool = True, on_best: Callable[[str], None] | None = None
              ) -> Summary:
    """Write the summary onto the parent run; return how its children ended and the
    leaderboard. Reads the children with one query (and the best few curves), whatever
    their number; the parent's ``time_summary_s`` says how long it took. ``on_best`` gets
    the best child's run id as soon as it is known, before the tables and plots."""
    started = time.perf_counter()
    client = store.client
    table = children_table(store, experiment_id, parent_id)
    if table.empty:
        table = pd.DataFrame(columns=["run_id", "run_name", "status", "start_time",
                                      "config_digest", "error", "blank"])
    current = current_attempts(table)
    table["attempt"] = np.where(current, "current", "superseded")
    children = table[current]
    status = children["status"]
    counts = Counts(children=len(children), failed=int(status.isin(["FAILED", "RUNNING"]).sum()),
                    killed=int((status == "KILLED").sum()), runs=len(table))
    tags = {"n_children": str(counts.children), "n_failed": str(counts.failed),
            "n_killed": str(counts.killed), "sweep_metric": metric}
    metrics = {"n_children": float(counts.children), "n_failed": float(counts.failed)}
    if counts.runs > counts.children:
        tags["n_superseded"] = str(counts.runs - counts.children)
    params = [p for p in swept_params(children) if not p.startswith(("param:sweep.",
                                                                     "param:pipeline."))]
    settings = [p for p in params if is_setting(p.removeprefix("param:"))]
    measured = list(dict.fromkeys([*final_metrics(children), metric]))  # none if all failed
    groups = seed_groups(children, settings, measured) if not children.empty else None
    if groups is not None and not (groups["n_runs"] > 1).any():
        groups = None  # one run per configuration: nothing to average
    best_by = "single run"
    best: pd.Series | None = None
    if groups is not None:
        ranked = rank_groups(groups, metric, direction)
        if not ranked.empty:
            top = ranked.iloc[0]
            members = children[children["run_id"].isin(str(top["run_ids"]).split())]
            best = best_child(members, metric, direction)
            best_by = f"mean over {int(top['n'])} seeds"
            if top["n_failed"]:
                best_by += f" ({int(top['n_failed'])} of {int(top['n_runs'])} did not finish)"
            for name in measured:
                value = float(top[f"{name}_mean"])
                if math.isfinite(value):
                    metrics[f"best_{name}"] = value
            for stat in ("std", "min", "max", "ci95_low", "ci95_high"):
                value = float(top[f"{metric}_{stat}"])
                if math.isfinite(value):
                    metrics[f"best_{metric}_{stat}"] = value
            metrics["best_n"] = float(top["n"])
            for setting in settings:
                tags[f"best.{setting.removeprefix('param:')}"] = str(
                    top[setting.removeprefix("param:")])
    else:
        best = best_child(children, metric, direction)
        if best is not None:
            for column, value in best.items():
                if (str(column).startswith("metric:") and isinstance(value, float)
                        and math.isfinite(value)):
                    metrics[f"best_{str(column).removeprefix('metric:')}"] = value
            for param in params:
                tags[f"best.{param.removeprefix('param:')}"] = str(best[param])
    if best is not None:
        tags.update({"best_run_id": best["run_id"], "best_run_name": str(best["run_name"]),
                     "best_by": best_by})
        if on_best is not None:
            on_best(str(best["run_id"]))
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    store.call("write the sweep summary", lambda: client.log_batch(
        parent_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v[:8000]) for k, v in tags.items()]))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "summary"
        folder.mkdir()
        shown = ["run_name", "status", *params,
                 *[c for c in children.columns if c.startswith("metric:test_")], "run_id"]
        view = children[[c for c in shown if c in children.columns]]
        view = view.rename(columns=lambda c: c.removeprefix("param:").removeprefix("metric:"))
        if metric in view.columns:
            view = view.sort_values(metric, ascending=direction != "maximize")
        table.drop(columns=["start_time", "blank"]).to_csv(folder / "children.csv", index=False)
        (folder / "children.md").write_text(_markdown(view))
        (folder / "children.html").write_text(view.to_html(index=False))
        if groups is not None:
            ordered = pd.concat([rank_groups(groups, metric, direction),
                                 groups.drop(rank_groups(groups, metric, direction).index)])
            ordered.to_csv(folder / "groups.csv", index=False)
            readable = _group_view(ordered, settings, metric, measured)
            (folder / "groups.md").write_text(_markdown(readable))
            (folder / "groups.html").write_text(readable.to_html(index=False, na_rep=""))
        scored = rank_children(children, metric, direction)
        if plots and not scored.empty:
            if groups is not None and settings:
                shown_metrics = [metric, *[m for m in measured
                                           if m.startswith("test_") and m != metric]]
                _plot_groups(groups[groups["n"] > 0], settings, shown_metrics, folder)
            else:  # the derived seeds follow the swept seed one to one
                _plot_metric_vs_params(scored, [p for p in params if not p.startswith(
                    "param:seeds.")], metric, folder)
            _plot_curves(store, scored, params, folder)
        store.call("log the sweep summary", lambda: client.log_artifacts(
            parent_id, str(folder), "summary"))
    seconds = time.perf_counter() - started
    store.call("time the sweep summary", lambda: client.log_batch(parent_id, metrics=[
        Metric("time_summary_s", seconds, int(time.time() * 1000), 0)]))
    ranked_ids = list(rank_children(children, metric, direction)["run_id"])
    ranked_ids += [r for r in children["run_id"] if r not in set(ranked_ids)]
    return Summary(counts=counts, best_by=best_by,
                   leaderboard=_leaderboard(children, groups, settings, params, metric,
                                            direction),
                   ranked_run_ids=ranked_ids,
                   best_run_id=str(best["run_id"]) if best is not None else None)
