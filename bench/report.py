"""Markdown tables and the scaling figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.memory import MemoryResult
from bench.scaling import ScalingResults
from bench.workloads import Workload, activation_bytes, data_bytes

RATIO_KEYS = ("yardstick", "sklearn", "torch")
SHORT = {"core": "core", "yardstick": "yardstick", "sklearn": "sklearn", "torch": "torch"}
FLOOR_KEY = "matmul"
FLOOR_LABEL = "bare np.matmul (floor)"


@dataclass
class WorkloadResult:
    """Everything measured for one workload: seconds per epoch by contender key, the bare
    matmul floor per epoch, and peak memory by contender key."""

    workload: Workload
    seconds: dict[str, float]
    labels: dict[str, str]
    matmul_seconds: float | None = None
    memory: dict[str, MemoryResult] = field(default_factory=dict)


def format_seconds(seconds: float | None) -> str:
    """A duration with a readable unit: "153 µs", "45.5 ms", "2.23 s"; "—" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return "—"  # unreachable


def format_bytes(n_bytes: float) -> str:
    """A size in KiB, MiB or GiB."""
    for unit, scale in (("GiB", 1024.0**3), ("MiB", 1024.0**2), ("KiB", 1024.0)):
        if n_bytes >= scale or unit == "KiB":
            return f"{n_bytes / scale:.3g} {unit}"
    return "—"  # unreachable


def format_ratio(numerator: float | None, denominator: float | None) -> str:
    """numerator / denominator as "2.31×", or "—"."""
    if not numerator or not denominator or not math.isfinite(numerator / denominator):
        return "—"
    return f"{numerator / denominator:.2f}×"


def format_memory(memory: MemoryResult | None) -> str:
    """ "412 MiB (+35 training)" or "—" / the error's first words."""
    if memory is None:
        return "—"
    if memory.error:
        return f"failed ({memory.error[:60]})"
    text = f"{memory.peak_mib:.0f} MiB"
    if memory.train_mib is not None:
        text += f" (+{max(memory.train_mib, 0.0):.0f} training)"
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def workloads_table(results: Sequence[WorkloadResult]) -> str:
    """Shapes, sizes and epochs of each workload."""
    rows = []
    for result in results:
        w = result.workload
        rows.append([
            w.title, str(list(w.layer_sizes)), f"{w.n_rows:,}",
            "full" if w.batch_size is None else str(w.batch_size), str(w.epochs),
            str(w.repeats), w.dtype, f"{w.learning_rate:g}", format_bytes(data_bytes(w)),
            format_bytes(activation_bytes(w)),
        ])
    header = ["workload", "layers", "rows", "batch", "epochs timed", "repeats", "dtype", "lr",
              "data (X + y)", "one batch's activations (Z and A)"]
    return markdown_table(header, rows)


def _contender_rows(result: WorkloadResult) -> list[list[str]]:
    """The table rows of one workload: each contender, then the bare-matmul floor."""
    seconds = result.seconds
    entries = [(key, result.labels[key], seconds[key]) for key in seconds]
    if result.matmul_seconds is not None:
        entries.append((FLOOR_KEY, FLOOR_LABEL, result.matmul_seconds))
    rows = []
    for key, label, own in entries:
        ratios = ["—" if key == other else format_ratio(seconds.get(other), own)
                  for other in RATIO_KEYS]
        fraction = "—"
        if result.matmul_seconds is not None and own:
            fraction = f"{100 * result.matmul_seconds / own:.0f}%"
        rows.append([result.workload.title, label, format_seconds(own), *ratios, fraction,
                     format_memory(result.memory.get(key))])
    return rows


def results_table(results: Sequence[WorkloadResult]) -> str:
    """The main table: one row per workload and contender."""
    header = ["workload", "contender", "time/epoch", "vs yardstick", "vs sklearn", "vs torch",
              "fraction of matmul peak", "peak RSS"]
    rows = [row for result in results for row in _contender_rows(result)]
    return markdown_table(header, rows)


def dtype_speedups(results: Sequence[WorkloadResult]) -> list[str]:
    """float32-over-float64 speedup lines for workloads timed in both dtypes."""
    by_title = {(r.workload.name, r.workload.dtype): r for r in results}
    lines = []
    for (name, dtype), r64 in by_title.items():
        r32 = by_title.get((name, "float32"))
        if dtype != "float64" or r32 is None:
            continue
        parts = [f"{SHORT[k]} {format_ratio(r64.seconds[k], r32.seconds.get(k))}"
                 for k in r64.seconds if k in r32.seconds]
        parts.append(f"bare matmuls {format_ratio(r64.matmul_seconds, r32.matmul_seconds)}")
        lines.append(f"- {name} float32 speedup over float64 (time f64 / time f32): "
                     + ", ".join(parts))
    return lines


def matmul_share_line(results: Sequence[WorkloadResult]) -> list[str]:
    """How much of the core's epoch the bare matmuls of the same shapes account for."""
    shares = [f"{r.workload.title} {100 * r.matmul_seconds / r.seconds['core']:.0f}%"
              for r in results if r.matmul_seconds and r.seconds.get("core")]
    if not shares:
        return []
    return ["- Share of the core's epoch spent in matmuls (bare np.matmul time of its shapes / "
            "its time): " + ", ".join(shares)]


def _check(name: str, value: float | None, goal: float, unit: str) -> str:
    """One target line: met / MISSED / not measured."""
    goal_shown = f"{100 * goal:.0f}%" if unit == "%" else f"{goal:g}×"
    if value is None or not math.isfinite(value):
        return f"- {name} ≥ {goal_shown}: not measured"
    shown = f"{100 * value:.0f}%" if unit == "%" else f"{value:.2f}×"
    verdict = "met" if value >= goal else "**MISSED**"
    return f"- {name} ≥ {goal_shown}: {shown}, {verdict}"


def _ratio(result: WorkloadResult | None, other: str) -> float | None:
    """time(other) / time(core) within one workload, or None."""
    if result is None or "core" not in result.seconds or other not in result.seconds:
        return None
    return result.seconds[other] / result.seconds["core"]


def target_lines(results: Sequence[WorkloadResult]) -> list[str]:
    """The project's speed targets for the core, each met or missed (workloads run only)."""
    by_title = {r.workload.title: r for r in results}
    w1, w2 = by_title.get("W1"), by_title.get("W2")
    w3, w3_32 = by_title.get("W3"), by_title.get("W3 f32")
    lines = []
    if w1:
        lines.append(_check("W1: core vs yardstick", _ratio(w1, "yardstick"), 2.2, "×"))
        lines.append(_check("W1: core vs sklearn", _ratio(w1, "sklearn"), 3.5, "×"))
    if w2:
        lines.append(_check("W2: core vs sklearn", _ratio(w2, "sklearn"), 1.5, "×"))
        lines.append(_check("W2: core vs torch", _ratio(w2, "torch"), 1.5, "×"))
    for result in (w3, w3_32):
        if result is not None:
            fraction = None
            if result.matmul_seconds and "core" in result.seconds:
                fraction = result.matmul_seconds / result.seconds["core"]
            title = result.workload.title
            lines.append(_check(f"{title}: core's fraction of matmul peak", fraction, 0.7, "%"))
    if w3 and w3_32:
        speedup = None
        if "core" in w3.seconds and "core" in w3_32.seconds:
            speedup = w3.seconds["core"] / w3_32.seconds["core"]
        lines.append(_check("W3: core float32 speedup over float64", speedup, 1.5, "×"))
    return lines


def scaling_markdown(results: ScalingResults) -> str:
    """The tables under scaling.png: time vs rows, time vs width, peak RSS vs rows."""
    keys = list(results.labels)
    parts = ["### Time per epoch against rows (`[32, 64, 32, 1]`, full batch ≤ 10⁴ rows, "
             "mini-batch 1024 beyond)", ""]
    rows = [[f"{n:,}", *(format_seconds(t.get(k)) for k in keys),
             format_ratio(t.get("sklearn"), t.get("core")),
             format_ratio(t.get("torch"), t.get("core"))] for n, t in results.by_rows.items()]
    header_extra = ["sklearn/core", "torch/core"]
    parts += [markdown_table(["rows", *keys, *header_extra], rows), ""]
    parts += ["### Time per epoch against hidden width (`[32, w, w, 1]`, full batch)", ""]
    rows = [[str(w), *(format_seconds(t.get(k)) for k in keys),
             format_ratio(t.get("sklearn"), t.get("core")),
             format_ratio(t.get("torch"), t.get("core"))] for w, t in results.by_width.items()]
    parts += [markdown_table(["width", *keys, *header_extra], rows), ""]
    if results.memory_by_rows:
        mem_keys = list(next(iter(results.memory_by_rows.values())))
        parts += ["### Peak RSS against rows (fresh process each; + growth while training)", ""]
        rows = [[f"{n:,}", *(format_memory(m.get(k)) for k in mem_keys)]
                for n, m in results.memory_by_rows.items()]
        parts += [markdown_table(["rows", *mem_keys], rows), ""]
    return "\n".join(parts)


def _plot_series(axis: object, points: Mapping[int, Mapping[str, float]],
                 keys: Sequence[str], labels: Mapping[str, str]) -> None:
    """One log-log line per contender key."""
    for key in keys:
        xs = [x for x, values in points.items() if math.isfinite(values.get(key, math.nan))]
        ys = [points[x][key] for x in xs]
        if xs:
            axis.loglog(xs, ys, marker="o", label=labels.get(key, key))  # type: ignore[attr-defined]


def plot_scaling(results: ScalingResults, path: Path) -> None:
    """scaling.png: time vs rows, time vs width and, if measured, peak RSS vs rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results.labels)
    panels = 3 if results.memory_by_rows else 2
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    _plot_series(axes[0], results.by_rows, keys, results.labels)
    axes[0].set(xlabel="rows", ylabel="seconds per epoch",
                title="[32, 64, 32, 1]: time vs rows")
    _plot_series(axes[1], results.by_width, keys, results.labels)
    axes[1].set(xlabel="hidden width w", ylabel="seconds per epoch",
                title="[32, w, w, 1]: time vs width")
    if panels == 3:
        peaks = {n: {k: m.peak_mib for k, m in by_key.items() if not m.error}
                 for n, by_key in results.memory_by_rows.items()}
        _plot_series(axes[2], peaks, keys, results.labels)
        axes[2].set(xlabel="rows", ylabel="peak RSS (MiB)", title="peak memory vs rows")
    for axis in axes:
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
