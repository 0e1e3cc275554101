"""The summary a sweep's parent run holds: a table, the best child, comparison plots.

Read back from MLflow (the children are the runs tagged ``mlflow.parentRunId``), so
it works the same whichever launcher ran the jobs and wherever they ran.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.tracking.store import Store

CURVE_METRIC = "train_loss"


@dataclass(frozen=True)
class Counts:
    """How the children of a sweep ended."""

    children: int
    failed: int  # FAILED, or still RUNNING when the sweep ended
    killed: int


def children_table(store: Store, experiment_id: str, parent_id: str) -> pd.DataFrame:
    """One row per child run: run id, name, status, every param, every final metric."""
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
            "error": run.data.tags.get("error", ""),
        }
        row.update({f"param:{k}": v for k, v in run.data.params.items()})
        row.update({f"metric:{k}": v for k, v in run.data.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def swept_params(table: pd.DataFrame) -> list[str]:
    """The param columns whose value differs between children."""
    params = [c for c in table.columns if c.startswith("param:")]
    return [c for c in params if table[c].astype(str).nunique(dropna=False) > 1]


def best_child(table: pd.DataFrame, metric: str, direction: str) -> pd.Series | None:
    column = f"metric:{metric}"
    if column not in table or table.empty:
        return None
    finished = table[(table["status"] == "FINISHED") & table[column].notna()]
    if finished.empty:
        return None
    index = finished[column].idxmax() if direction == "maximize" else finished[column].idxmin()
    return finished.loc[index]


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown needs tabulate)."""
    if frame.empty:
        return "no child runs\n"

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines) + "\n"


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
        values = table[param].astype(str)
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
        name = param.removeprefix("param:")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {name}")
        fig.tight_layout()
        path = folder / f"{metric}_vs_{name.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_curves(store: Store, table: pd.DataFrame, params: list[str], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, row in table.iterrows():
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
    ax.set_title("training curves of every child run")
    if len(table) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / "training_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summarise(store: Store, experiment_id: str, parent_id: str, metric: str, direction: str,
              *, plots: bool = True) -> Counts:
    """Write the summary onto the parent run; return how its children ended."""
    client = store.client
    table = children_table(store, experiment_id, parent_id)
    status = table["status"] if not table.empty else pd.Series(dtype=str)
    counts = Counts(children=len(table), failed=int(status.isin(["FAILED", "RUNNING"]).sum()),
                    killed=int((status == "KILLED").sum()))
    tags = {"n_children": str(counts.children), "n_failed": str(counts.failed),
            "n_killed": str(counts.killed), "sweep_metric": metric}
    metrics = {"n_children": float(counts.children), "n_failed": float(counts.failed)}
    params = swept_params(table) if not table.empty else []
    best = best_child(table, metric, direction)
    if best is not None:
        tags.update({"best_run_id": best["run_id"], "best_run_name": str(best["run_name"])})
        for column, value in best.items():
            if str(column).startswith("metric:") and isinstance(value, float) and math.isfinite(
                value
            ):
                metrics[f"best_{str(column).removeprefix('metric:')}"] = value
        for param in params:
            tags[f"best.{param.removeprefix('param:')}"] = str(best[param])
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    store.call("write the sweep summary", lambda: client.log_batch(
        parent_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v[:8000]) for k, v in tags.items()]))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "summary"
        folder.mkdir()
        shown = ["run_name", "status", *params,
                 *[c for c in table.columns if c.startswith("metric:test_")], "run_id"]
        view = table[[c for c in shown if c in table.columns]] if not table.empty else table
        view = view.rename(columns=lambda c: c.removeprefix("param:").removeprefix("metric:"))
        if "test_accuracy" in view.columns or f"{metric}" in view.columns:
            view = view.sort_values(metric if metric in view.columns else "test_accuracy",
                                    ascending=direction != "maximize")
        table.to_csv(folder / "children.csv", index=False)
        (folder / "children.md").write_text(_markdown(view))
        (folder / "children.html").write_text(view.to_html(index=False))
        if plots and not table.empty and f"metric:{metric}" in table:
            _plot_metric_vs_params(table, params, metric, folder)
            _plot_curves(store, table, params, folder)
        store.call("log the sweep summary", lambda: client.log_artifacts(
            parent_id, str(folder), "summary"))
    return counts
