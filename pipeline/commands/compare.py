"""``python -m pipeline.commands.compare RUN [RUN ...]``: what differs between runs, as one table.

Shows, for two or more runs of a store (a sweep's parent run id stands for its children, a
registered ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` for its version's run):

* the params that differ (the equal ones are counted);
* every final metric, with its delta against the first run; the stage times apart;
* the environment (Python, platform, BLAS and its threads, training threads) and the
  package versions that differ (from each run's environment.json);
* the config, data and result digests (12 characters) and the git commit;
* for exactly two runs, the first epoch where each metric's history diverges (from
  history.csv, every epoch; else the store's points, which may be thinned);
* links to each run and to MLflow's side-by-side comparison.

``--uri`` picks the store (default: the project's mlflow.db; any tracking URI, sqlite or
an http server). ``--format md|html|csv`` writes the table to a file (``--output``,
default compare.<ext> in the current directory) instead of printing it. Exits 1 with a
one-line error when a run is not in the store or there is nothing to compare.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.tracking.comparison import Comparison, Divergence, Values

FORMATS = ("text", "md", "html", "csv")
EXTENSIONS = {"text": "txt", "md": "md", "html": "html", "csv": "csv"}
SHORT_HASH = 12
MAX_CELL = 60  # characters of one cell in the terminal table
MISSING = "—"
USAGE = ("usage: python -m pipeline.commands.compare RUN [RUN ...] [--uri URI] "
         "[--format md|html|csv]")


@dataclass(frozen=True)
class Section:
    """One titled table; ``note`` says what it leaves out (e.g. "36 params equal")."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


# -- cells -------------------------------------------------------------------------------
def number(value: float | None) -> str:
    if value is None:
        return MISSING
    if value == 0 or math.isnan(value) or math.isinf(value) or 1e-4 <= abs(value) < 1e7:
        return f"{value:.4f}"
    return f"{value:.4e}"


def delta(value: float | None, first: float | None) -> float | None:
    """``value - first``; None when either is missing."""
    if value is None or first is None:
        return None
    return value - first


def signed(change: float) -> str:
    """``+0.0050``; tiny changes in e-notation so they never read as zero."""
    if abs(change) >= 1e-4 or math.isnan(change):
        return f"{change:+.4f}"
    return f"{change:+.2e}"


def _text(value: Any) -> str:
    return MISSING if value is None else str(value)


def _short(value: Any) -> str:
    return MISSING if value is None else str(value)[:SHORT_HASH]


def labels(comparison: Comparison, *, full: bool = False) -> list[str]:
    """Column names: ``#1 a4423a92`` (``full``: the whole run id), unique for a run given
    twice."""
    return [f"#{i} {run.run_id if full else run.run_id[:8]}"
            for i, run in enumerate(comparison.runs, 1)]


def _status(row: Values) -> str:
    return "same" if row.same else "differs"


# -- sections ----------------------------------------------------------------------------
def _metric_section(title: str, rows: Sequence[Values], names: list[str], raw: bool,
                    note: str = "") -> Section:
    if raw:
        columns = ["name", *names, *(f"delta {name}" for name in names[1:]), "status"]
        body = [[row.name, *row.values,
                 *(delta(v, row.values[0]) for v in row.values[1:]), _status(row)]
                for row in rows]
        return Section(title, columns, body, note)
    body = []
    for row in rows:
        first = row.values[0]
        cells = [number(first)]
        for value in row.values[1:]:
            change = delta(value, first)
            same = change is None or change == 0 or (value is not None and first is not None
                                                     and math.isnan(value) and math.isnan(first))
            cells.append(number(value) if same else f"{number(value)}  {signed(change)}")
        body.append([row.name, *cells, _status(row)])
    return Section(title, ["name", *names, "status"], body, note)


def _plain_section(title: str, rows: Sequence[Values], names: list[str], cell: Any,
                   note: str = "") -> Section:
    body = [[row.name, *(cell(v) for v in row.values), _status(row)] for row in rows]
    return Section(title, ["name", *names, "status"], body, note)


def _divergence_result(found: Divergence, names: list[str]) -> str:
    if found.epoch is not None:
        return f"diverges at epoch {found.epoch}"
    if found.identical:
        return f"identical over {found.common} epochs"
    if found.common == 0:
        only = [name.split()[0] for name, n in zip(names, found.lengths, strict=True) if n]
        return f"only in {' '.join(only)}" if only else "no epochs"
    return (f"same over the {found.common} common epochs ({names[0].split()[0]} has "
            f"{found.lengths[0]}, {names[1].split()[0]} has {found.lengths[1]})")


def _history_section(comparison: Comparison, names: list[str], raw: bool) -> Section | None:
    if comparison.divergence is None:
        return None
    sources = comparison.history_sources
    if all(source == "history.csv" for source in sources):
        note = "every epoch, from each run's history.csv"
    else:
        which = ", ".join(f"{name.split()[0]} from {source}"
                          for name, source in zip(names, sources, strict=True))
        note = (f"{which}; the store may hold thinned points: a divergence is at or before "
                "the epoch shown")
    body: list[list[Any]] = []
    for found in comparison.divergence:
        if raw:
            values: list[Any] = list(found.values)
        elif found.epoch is not None:
            values = [_history_value(v) for v in found.values]
        else:
            values = ["", ""]
        row = [found.metric, *values, _divergence_result(found, names)]
        body.append([*row, found.epoch] if raw else row)
    columns = ["name", *names, "status", *(["epoch"] if raw else [])]
    return Section("history (values at the first differing epoch)", columns, body, note)


def _history_value(value: float | None) -> str:
    """Enough digits to show two close floats apart."""
    return MISSING if value is None else f"{value:.10g}"


def sections(comparison: Comparison, *, raw: bool = False) -> list[Section]:
    """The comparison as titled tables: display strings, or (``raw``) full values with the
    deltas in their own columns, for CSV."""
    names = labels(comparison, full=raw)
    full_or_short = _text if raw else _short
    differing = [row for row in comparison.params if not row.same]
    equal = len(comparison.params) - len(differing)
    out = [
        _plain_section("params", differing, names, _text,
                       f"{len(differing)} differ, {equal} equal" if differing
                       else f"all {equal} equal"),
        _metric_section("final metrics (deltas against #1)", comparison.metrics, names, raw),
    ]
    if comparison.timings:
        out.append(_metric_section("stage times in seconds (not results: they always vary)",
                                   comparison.timings, names, raw))
    out.append(_plain_section("environment", comparison.environment, names, _text))
    if comparison.without_packages:
        missing = ", ".join(run_id[:8] for run_id in comparison.without_packages)
        out.append(_plain_section("packages", [], names, _text,
                                  f"not compared: no environment.json in run {missing}"))
    else:
        changed = [row for row in comparison.packages if not row.same]
        same = len(comparison.packages) - len(changed)
        out.append(_plain_section("packages (versions that differ)", changed, names, _text,
                                  f"{len(changed)} differ, {same} equal" if changed
                                  else f"all {same} equal"))
    out.append(_plain_section("config, data and results (sha256)", comparison.digests, names,
                              full_or_short))
    out.append(_plain_section("code", comparison.code, names, full_or_short))
    history = _history_section(comparison, names, raw)
    if history is not None:
        out.append(history)
    return out


def header_lines(comparison: Comparison) -> list[str]:
    """What the runs are: one line each, with the run's link."""
    source = ""
    if comparison.parents:
        parents = ", ".join(p.run_id[:8] for p in comparison.parents)
        source = f" (the children of sweep {parents})"
    lines = [f"{len(comparison.runs)} runs in {comparison.uri}{source}"]
    for i, (run, url) in enumerate(zip(comparison.runs, comparison.run_urls, strict=True), 1):
        lines.append(f"#{i} {run.run_id}  {run.name}  {run.status}  {url}")
    return lines


def ui_line(comparison: Comparison) -> str:
    prefix = "" if comparison.uri.startswith(("http://", "https://")) else "make ui, then "
    return f"side by side in the MLflow UI: {prefix}{comparison.compare_url}"


# -- formats ----------------------------------------------------------------------------
def _clip(cell: Any) -> str:
    text = str(cell)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def _aligned(section: Section) -> list[str]:
    rows = [[_clip(c) for c in row] for row in [section.columns, *section.rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(section.columns))]
    lines = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines


def render_text(comparison: Comparison) -> str:
    lines = header_lines(comparison)
    for section in sections(comparison):
        lines += ["", section.title + (f": {section.note}" if section.note else "")]
        if section.rows:
            lines += _aligned(section)
    lines += ["", ui_line(comparison)]
    return "\n".join(lines) + "\n"


def render_markdown(comparison: Comparison) -> str:
    from pipeline.tracking.summary import markdown_table  # pandas and MLflow: for --format md

    head, *runs = header_lines(comparison)
    parts = [f"# {head}\n", "\n".join(f"- {line}" for line in runs) + "\n"]
    for section in sections(comparison):
        parts.append(f"## {section.title}\n")
        if section.rows:
            parts.append(markdown_table(section.columns, section.rows))
        if section.note:
            parts.append(f"_{section.note}_\n")
    parts.append(f"[{ui_line(comparison).split(':', 1)[0]}]({comparison.compare_url})\n")
    return "\n".join(parts)


def _frame(section: Section) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(section.rows, columns=section.columns)


def render_html(comparison: Comparison) -> str:
    head, *_ = header_lines(comparison)
    items = "".join(
        f'<li>{html.escape(name)} <a href="{html.escape(url)}">{run.run_id}</a> '
        f"{html.escape(run.name)} {run.status}</li>"
        for name, run, url in zip(labels(comparison), comparison.runs, comparison.run_urls,
                                  strict=True))
    body = [f"<h1>{html.escape(head)}</h1>", f"<ul>{items}</ul>"]
    for section in sections(comparison):
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.rows:
            body.append(_frame(section).to_html(index=False, na_rep=MISSING))
        if section.note:
            body.append(f"<p><em>{html.escape(section.note)}</em></p>")
    body.append(f'<p><a href="{html.escape(comparison.compare_url)}">side by side in the '
                "MLflow UI</a></p>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>run comparison"
            "</title></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def render_csv(comparison: Comparison) -> str:
    """One row per shown value, with a ``section`` column; full run ids, hashes and
    numbers, the deltas in their own columns; a section's note as a row of its own."""
    import pandas as pd

    frames = []
    for section in sections(comparison, raw=True):
        frame = _frame(section)
        if section.note:
            note = pd.DataFrame([{"name": f"({section.note})", "status": "note"}])
            frame = note if frame.empty else pd.concat([frame, note], ignore_index=True)
        frames.append(frame.assign(section=section.title.split(" (")[0]))
    table = pd.concat(frames, ignore_index=True)
    names = labels(comparison, full=True)
    columns = ["section", "name", *names, *(f"delta {name}" for name in names[1:]), "status",
               "epoch"]
    table = table.reindex(columns=columns)
    table["epoch"] = table["epoch"].astype("Int64")
    return table.to_csv(index=False)


RENDERERS = {"text": render_text, "md": render_markdown, "html": render_html,
             "csv": render_csv}


# -- command line -----------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.commands.compare",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN", help="MLflow run ids (a sweep's "
                        "parent run id: its children; models:/<name>@<alias> or "
                        "models:/<name>/<version>: the version's run); the first is the "
                        "reference for deltas")
    parser.add_argument("--uri", default=None, help="the store's tracking URI, sqlite:///... "
                        "or http://host:port (default: the project's mlflow.db)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="text (default: "
                        "printed), or md, html, csv (written to a file)")
    parser.add_argument("--output", type=Path, default=None, help="the file to write "
                        "(default: compare.<ext> in the current directory); its extension "
                        "picks the format when --format is not given")
    args = parser.parse_args(argv)
    uri = args.uri
    run_ids = []
    for item in args.runs:  # tracking.uri=<uri>, as pipeline.commands.rerun takes it, works too
        if item.startswith("tracking.uri="):
            uri = uri or item.split("=", 1)[1]
        else:
            run_ids.append(item)
    if not run_ids:
        print(f"error: no run id given; {USAGE}", file=sys.stderr)
        return 1
    fmt = args.format
    if fmt is None and args.output is not None:
        fmt = {f".{ext}": name for name, ext in EXTENSIONS.items()}.get(args.output.suffix)
    fmt = fmt or "text"

    from pipeline.tracking.comparison import compare  # MLflow (~1 s): after the usage checks
    from pipeline.tracking.registry import registered_run_ids
    from pipeline.tracking.store import store_uri

    try:
        run_ids = registered_run_ids(store_uri(uri), run_ids)  # models:/<name>@<alias>
        comparison = compare(uri, run_ids)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    text = RENDERERS[fmt](comparison)
    if fmt == "text" and args.output is None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: what was read is enough
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python's exit flushes it)
        return 0
    path = (args.output or Path(f"compare.{EXTENSIONS[fmt]}")).expanduser().absolute()
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        print(f"error: cannot write {path}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({fmt}, {len(comparison.runs)} runs)")
    print(ui_line(comparison))
    return 0


if __name__ == "__main__":
    sys.exit(main())
